"""SIGKILL at random moments, in a loop of restarts, never costs correctness: train-gan,
generate-pairs and train-fusion each end with exactly the weights / partners of an
uninterrupted run (atomic checkpoint and shard writes, resumable stages, epochs seeded from
(seed, epoch))."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.config import dump_config
from stage2_fusion.methods import load_config
from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _config(tmp_path: Path) -> Path:
    o = copy.deepcopy(TINY_OVERRIDES)
    o["gan"].update({"epochs": 6, "decay_start_epoch": 3, "steps_per_epoch": 4})
    o["fusion"]["recipes"]["agw"].update({"epochs": 6, "steps_per_epoch": 4, "eval_every": 0})
    path = tmp_path / "kill.toml"
    path.write_text(dump_config(load_config("demo", overrides=o)))
    return path


def _run(args: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines", *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - t0


def _run_killing(args: list[str], env: dict, cwd: Path, rng: random.Random, duration: float, kill_attempts: int = 8) -> int:
    """Start the command ``kill_attempts`` times, SIGKILLing each run after a random delay
    (0.4 to 1.05 times the uninterrupted run's wall time) unless it finishes first; then run it
    once more to the end, from whatever the kills left. Returns how many runs were killed.

    The last run is never killed: most of a short run is start-up (importing torch, reading the
    data), so a resume can take longer than the uninterrupted run, and a loop that kills
    every run later than that never ends (CI: "generate-pairs did not finish in 60 attempts")."""
    kills = 0
    for _ in range(kill_attempts):
        proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], env=env, cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.4 * duration, 1.05 * duration))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        assert proc.returncode == 0, err[-3000:]
        return kills
    _run(args, env, cwd)
    return kills


def _weights(path: Path, *keys: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: state[k] for k in keys}


def test_sigkill_loop_reaches_the_uninterrupted_result(sysu_tree, tmp_path):
    config = _config(tmp_path)
    env = {**os.environ, "VIREID_CACHE": str(tmp_path / "cache"), "VIREID_PROGRESS_SECONDS": "3600"}
    common = ["--dataset", "sysu", "--data-root", str(sysu_tree), "--device", "cpu"]
    rng = random.Random(0)

    # stage 1
    t_gan = _run(["train-gan", *common, "--config", str(config), "--run-dir", str(tmp_path / "ref")], env, tmp_path)
    kills_gan = _run_killing(["train-gan", *common, "--config", str(config), "--run-dir", str(tmp_path / "kill")], env, tmp_path,
                             rng, t_gan)
    ref, got = (_weights(p / "gan" / "gan.pt", "g_vis2ir", "g_ir2vis") for p in (tmp_path / "ref", tmp_path / "kill"))
    for net in ref:
        for name, value in ref[net].items():
            assert torch.equal(value, got[net][name]), (net, name)

    # pair generation from the reference generator, 8 shards so that kills land between them
    gan = tmp_path / "ref" / "gan" / "gan.pt"
    t_pairs = _run(["generate-pairs", "--checkpoint", str(gan), *common, "--out", str(tmp_path / "pairs-ref"), "--shard-size", "12"], env, tmp_path)
    kills_pairs = _run_killing(["generate-pairs", "--checkpoint", str(gan), *common, "--out", str(tmp_path / "pairs-kill"), "--shard-size", "12"], env,
                               tmp_path, rng, t_pairs)
    ref_m, got_m = (json.loads((tmp_path / p / "manifest.json").read_text()) for p in ("pairs-ref", "pairs-kill"))
    assert [s["sha256"] for s in got_m["shards"]] == [s["sha256"] for s in ref_m["shards"]]

    # stage 2
    args = ["train-fusion", *common, "--method", "agw", "--config", str(config)]
    t_fusion = _run([*args, "--run-dir", str(tmp_path / "f-ref")], env, tmp_path)
    kills_fusion = _run_killing([*args, "--run-dir", str(tmp_path / "f-kill")], env, tmp_path, rng, t_fusion)
    ref_w, got_w = (torch.load(tmp_path / p / "fusion" / "reid.pt", weights_only=True)["model"] for p in ("f-ref", "f-kill"))
    for name, value in ref_w.items():
        assert torch.equal(value, got_w[name]), name
    assert kills_gan + kills_pairs + kills_fusion >= 3, (kills_gan, kills_pairs, kills_fusion)
    for folder in ("kill", "pairs-kill", "f-kill"):  # no temporary file is ever left as if complete
        assert not [p for p in (tmp_path / folder).rglob("*") if p.name.endswith(".tmp") and not p.name.startswith(".")]
