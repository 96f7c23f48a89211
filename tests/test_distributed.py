"""Distributed training with two CPU processes on the gloo backend (torchrun)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from common.config import dump_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_gloo(sysu_tree, tiny_cfg, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_cfg))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "pipelines", "train-fusion", "--dataset", "sysu",
           "--data-root", str(sysu_tree), "--method", "agw", "--config", str(config), "--run-dir", str(run_dir),
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too
        raise
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("re-ID checkpoint:") == 1  # rank 0 alone reports
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = tiny_cfg.fusion.recipe("agw").epochs
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))  # one writer
    state = torch.load(run_dir / "fusion" / "reid.pt", weights_only=False)
    assert state["epoch"] == epochs and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
