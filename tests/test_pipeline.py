"""End to end: run-all on tiny data, stage skipping and resuming, the CLI's error contract."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stage2_fusion.methods import load_config
from common.errors import UserError
from pipelines.cli import app
from pipelines.data import load_splits
from pipelines.partners import PartnerKind
from pipelines.run_all import run_all
from pipelines.stages import partner_cache_stage as stage_generate_pairs
from pipelines.stages import train_gan_stage as stage_train_gan
from stage2_fusion.train import train_fusion
from tests.conftest import TINY_OVERRIDES

CPU = torch.device("cpu")
pytestmark = pytest.mark.e2e


class _Killed(Exception):
    """Stands for a process killed right after a checkpoint write."""


@contextmanager
def crash_after_first_epoch(monkeypatch, trainer_module):
    """Make ``trainer_module.save_checkpoint`` raise right after writing epoch 1's last.pt;
    the block must end in that crash."""
    original = trainer_module.save_checkpoint

    def save_then_crash(path, kind, payload):
        original(path, kind, payload)
        if Path(path).name == "last.pt" and payload["epoch"] == 1:
            raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "save_checkpoint", save_then_crash)
        with pytest.raises(_Killed):
            yield


def test_run_all_on_sysu_layout_tree_then_skips_on_rerun(sysu_tree, tiny_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    results = run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="tsme")
    for name in ("config.toml", "gan/gan.pt", "gan/last.pt", "partner_cache/manifest.json", "fusion/reid.pt", "fusion/best.pt",
                 "results.json", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tb").glob("*/events.out.tfevents.*"))
    written = json.loads((run_dir / "results.json").read_text())
    assert written["num_trials"] == 2 and len(written["trials"]) == 2
    assert written["rank1"]["mean"] == pytest.approx(np.mean([t["rank1"] for t in written["trials"]]))
    assert written["rank1"] == results["rank1"] and "untrained_baseline" in written
    assert written["reranked"] is False and written["with_reranking"]["params"] == {"k1": 20, "k2": 6, "lambda_value": 0.3}
    assert written["num_query"] == 4 * 2 * 2  # every infrared test image is a query
    mtime = (run_dir / "fusion" / "reid.pt").stat().st_mtime_ns
    capsys.readouterr()
    again = run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="tsme")
    err = capsys.readouterr().err
    assert "stage 1 (DSGAN)" in err and "skipped" in err and "generate-pairs" in err
    assert (run_dir / "fusion" / "reid.pt").stat().st_mtime_ns == mtime
    assert again["rank1"] == results["rank1"]


def test_run_dir_with_other_config_is_refused(sysu_tree, tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="agw")
    other = load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "seed": 3}})
    with pytest.raises(UserError, match="another configuration"):
        run_all(other, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="agw")


def test_resumed_fusion_training_equals_uninterrupted(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    full = train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "a" / "fusion", CPU)
    # interrupted run: a config with epochs=1 has another stage key, so emulate the crash by stopping
    # right after the first epoch's last.pt
    import stage2_fusion.train as trainer

    with crash_after_first_epoch(monkeypatch, trainer):
        train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "b" / "fusion", CPU)
    assert not (tmp_path / "b" / "fusion" / "reid.pt").exists()
    resumed = train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "b" / "fusion", CPU)
    wa = torch.load(full, weights_only=False)["model"]
    wb = torch.load(resumed, weights_only=False)["model"]
    # killed between the last epoch's last.pt and reid.pt: the resume runs no epoch, same reid.pt
    resumed.unlink()
    wc = torch.load(train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "b" / "fusion", CPU), weights_only=False)["model"]
    for label, got in (("resumed", wb), ("resumed after the last epoch", wc)):
        for name in wa:
            assert torch.equal(wa[name], got[name]), (label, name)


def test_generate_pairs_resume_equals_uninterrupted(sysu_tree, tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    gan = stage_train_gan(tiny_cfg, splits, tmp_path / "run", CPU)
    from stage1_dsgan.generate import generate_pairs

    whole = generate_pairs(gan, splits.train, tmp_path / "whole", CPU, dataset="sysu", data_root=sysu_tree, shard_size=40)
    import common.data.partner_cache as pc

    original = pc.PartnerCacheWriter.write_shard

    def crash_on_second(self, index, partners):
        if index == 1:
            raise KeyboardInterrupt
        original(self, index, partners)

    pc.PartnerCacheWriter.write_shard = crash_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            generate_pairs(gan, splits.train, tmp_path / "part", CPU, dataset="sysu", data_root=sysu_tree, shard_size=40)
    finally:
        pc.PartnerCacheWriter.write_shard = original
    cache = stage_generate_pairs(gan, splits, tmp_path / "part", CPU)  # resumes: finished shards are kept
    whole_manifest = json.loads((whole / "manifest.json").read_text())
    assert [s["sha256"] for s in cache.manifest["shards"]] == [s["sha256"] for s in whole_manifest["shards"]]


@pytest.mark.slow
def test_training_beats_the_untrained_network_on_demo(tmp_path_factory):
    """Cross-modality learning on the demo data: 40 training identities, 12 test identities,
    AGW at 96 x 48 for 12 epochs (about 30 s on 2 cores). Measured when written: trained
    Rank-1 28.3 / mAP 34.5 against 13.1 / 18.5 untrained (chance is high with 12 ids)."""
    from common.demo.writing import make_demo

    root = make_demo(tmp_path_factory.mktemp("demo40") / "demo", 0, n_train=32, n_val=8, n_test=12)
    cfg = load_config("demo", overrides={
        "fusion": {"backbone": {"base_width": 16, "pretrained": "none"},
                   "recipes": {"agw": {"epochs": 12, "warmup_epochs": 1, "milestones": [10], "eval_every": 0, "backbone_lr_mult": 1.0}}},
        "eval": {"trials": 3},
    })
    results = run_all(cfg, dataset="demo", data_root=root, run_dir=tmp_path_factory.mktemp("run"), device=CPU, method="agw")
    trained, untrained = results, results["untrained_baseline"]
    assert trained["mean_ap"]["mean"] > untrained["mean_ap"]["mean"] + 8, (trained["mean_ap"], untrained["mean_ap"])
    assert trained["rank1"]["mean"] > untrained["rank1"]["mean"] + 8, (trained["rank1"], untrained["rank1"])


def test_cli_user_errors_are_one_line_exit_2(tmp_path):
    cases = [
        ["test", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", "demo"],
        ["run-all", "--dataset", "sysu", "--data-root", str(tmp_path / "no-such-dir"), "--run-dir", str(tmp_path / "r")],
        ["run-all", "--dataset", "sysu", "--run-dir", str(tmp_path / "r2")],
        ["train-fusion", "--dataset", "sysu", "--data-root", str(tmp_path), "--method", "nope", "--run-dir", str(tmp_path / "r3")],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_cli_test_command_and_json(sysu_tree, tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="tsme")
    runner = CliRunner()
    res = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "fusion" / "reid.pt"), "--dataset", "sysu",
                              "--data-root", str(sysu_tree), "--mode", "indoor", "--trials", "3", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mode"] == "indoor" and out["num_trials"] == 3 and len(out["checkpoint_sha256"]) == 64
    assert (run_dir / "results-sysu-indoor-1shot.json").exists()
    # the last epoch and, labelled apart, the best-on-test checkpoint (AGW/TSME's reporting)
    assert out["selection"] == "last epoch" and out["epoch"] == 2
    best = out["best_on_test"]
    assert best["selection"].startswith("best test-set Rank-1") and "optimistic" in best["selection"]
    assert best["epoch"] == torch.load(run_dir / "fusion" / "best.pt", weights_only=False)["epoch"]
    res = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "fusion" / "best.pt"), "--dataset", "sysu",
                              "--data-root", str(sysu_tree), "--mode", "indoor", "--trials", "3", "--json", "--device", "cpu"])
    direct = json.loads(res.stdout.strip().splitlines()[-1])
    assert direct["rank1"] == best["rank1"] and direct["mean_ap"] == best["mean_ap"] and "best_on_test" not in direct
    res = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "fusion" / "reid.pt"), "--dataset", "sysu",
                              "--data-root", str(sysu_tree), "--trials", "3", "--device", "cpu"])
    assert "last epoch (epoch 2)" in res.stdout and "best on test, optimistic" in res.stdout
    res = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "fusion" / "reid.pt"), "--dataset", "sysu", "--data-root",
                              str(sysu_tree), "--trials", "3", "--rerank", "--k1", "3", "--k2", "2", "--json", "--device", "cpu"])
    reranked = json.loads(res.stdout.strip().splitlines()[-1])
    assert reranked["reranked"] == {"k1": 3, "k2": 2, "lambda_value": 0.3}
    assert reranked["best_on_test"]["selection"].startswith("best test-set")
    assert (run_dir / "results-sysu-all-1shot-reranked.json").exists()
    res = runner.invoke(app, ["train-fusion", "--dataset", "sysu", "--data-root", str(sysu_tree), "--method", "tsme",
                              "--run-dir", str(tmp_path / "r2")])
    assert res.exit_code != 0 and "--partners" in str(res.exception)


def test_on_the_fly_partners_equal_the_cached_ones_and_train(sysu_tree, tiny_cfg, tmp_path):
    from pipelines.partners import PartnerSource
    from pipelines.stages import train_reid_stage
    from stage1_dsgan.generate import load_generators, make_translator

    splits = load_splits(tiny_cfg, "sysu", sysu_tree)
    gan = stage_train_gan(tiny_cfg, splits, tmp_path / "run", CPU)
    cache = stage_generate_pairs(gan, splits, tmp_path / "pairs", CPU)
    translate = make_translator(load_generators(gan, CPU), CPU)
    idx = np.array([5, 0, 77, 42, 13, 90])
    images = torch.from_numpy(np.array(splits.train.images[np.sort(idx)]))
    on_the_fly = translate(images, torch.from_numpy(splits.train.is_ir[np.sort(idx)])).numpy()
    assert np.abs(on_the_fly.astype(int) - cache[np.sort(idx)].astype(int)).max() <= 1  # same generator, same input
    reid = train_reid_stage(tiny_cfg, "tsme", splits, PartnerSource.on_the_fly(gan), tmp_path / "otf", CPU)
    state = torch.load(reid, weights_only=False)
    assert state["partners"]["kind"] == "on-the-fly" and state["partners"]["generator"] == str(gan)
    assert PartnerSource.from_record(state) == PartnerSource.on_the_fly(gan)


def test_resumed_gan_training_equals_uninterrupted(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    import stage1_dsgan.train as gan_trainer

    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    full = stage_train_gan(tiny_cfg, splits, tmp_path / "a", CPU)

    with crash_after_first_epoch(monkeypatch, gan_trainer):
        stage_train_gan(tiny_cfg, splits, tmp_path / "b", CPU)
    resumed = stage_train_gan(tiny_cfg, splits, tmp_path / "b", CPU)
    a, b = torch.load(full, weights_only=False), torch.load(resumed, weights_only=False)
    # killed after the last epoch's last.pt but before gan.pt: the resume runs no epoch and
    # still writes the same gan.pt (it crashed with an UnboundLocalError on CI)
    resumed.unlink()
    again = torch.load(stage_train_gan(tiny_cfg, splits, tmp_path / "b", CPU), weights_only=False)
    for label, got in (("resumed", b), ("resumed after the last epoch", again)):
        for net in ("g_vis2ir", "g_ir2vis", "d_ir", "d_vis"):
            for name in a[net]:
                assert torch.equal(a[net][name], got[net][name]), (label, net, name)
    # and logs the same final image grid: the last generators on a fixed batch of training images
    tag = "gan/final_vis_fakeir_cycled__ir_fakevis_cycled"
    final_a, final_b = (_tensorboard_images(run / "tb" / "gan", tag) for run in (tmp_path / "a", tmp_path / "b"))
    assert len(final_a) == 1 and len(final_b) == 2  # b: once when its training ended, once on the empty resume
    assert final_a[0] == final_b[0] == final_b[1]
    # its rows 1 and 4 are real training images as the GAN sees them (BT.601 gray), not augmented
    grid = np.asarray(Image.open(io.BytesIO(final_b[1])).convert("RGB"), np.float64)  # (6 (H + 2) + 2, 4 (W + 2) + 2, 3)
    h, w = tiny_cfg.data.height, tiny_cfg.data.width
    gray = np.asarray(splits.train.images, np.float64) @ np.array([0.299, 0.587, 0.114])  # (N, H, W)
    def tile(row: int, col: int) -> np.ndarray:
        return grid[2 + row * (h + 2) : 2 + row * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w]

    shown = []  # the visible training image in each column of row 1
    for row, modality in ((0, ~splits.train.is_ir), (3, splits.train.is_ir)):
        for col in range(4):
            assert np.ptp(tile(row, col), axis=-1).max() == 0  # three equal channels
            distance = np.abs(gray[modality] - tile(row, col)[None, :, :, 0]).max(axis=(1, 2))
            assert distance.min() <= 1.5, (row, col)
            if row == 0:
                shown.append(np.flatnonzero(modality)[distance.argmin()])
    # row 2 is the last epoch's visible -> infrared generator on those images, in eval mode
    from common.data.augment import to_float_images, to_gan_domain
    from stage1_dsgan.networks import build_dsgan

    model = build_dsgan(tiny_cfg.gan)
    model.load_state_dict(torch.load(tmp_path / "b" / "gan" / "last.pt", weights_only=False)["model"])
    with torch.no_grad():
        fake = model.eval().g_vis2ir(to_gan_domain(to_float_images(torch.from_numpy(splits.train.images[shown]), CPU)))
    expected = fake.add(1).div(2).clamp(0, 1).mul(255).numpy()  # (4, 3, H, W)
    for col in range(4):
        assert np.abs(tile(1, col).transpose(2, 0, 1) - expected[col]).max() <= 1.5, col


def _tensorboard_images(folder, tag: str) -> list[bytes]:
    """The encoded images logged under ``tag`` in every event file of ``folder``, oldest first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = []
    for events in sorted(folder.glob("events.out.tfevents.*"), key=lambda f: f.stat().st_mtime_ns):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        if tag in acc.Tags()["images"]:
            images += [e.encoded_image_string for e in acc.Images(tag)]
    return images


def test_run_all_when_every_identity_has_fewer_infrared_images_than_k(tmp_path):
    """A SYSU-MM01-layout copy with 4 infrared (and 8 visible) images per identity, the TSME
    recipe's K = 6 without replacement: short identities are drawn with replacement (this
    crashed with a numpy shape mismatch from the sampler before)."""
    from tests.conftest import make_sysu_tree

    root = make_sysu_tree(tmp_path / "SYSU-MM01", [1, 2, 3, 5], [7], [11, 12], per_cam=2)
    tsme = {**TINY_OVERRIDES["fusion"]["recipes"]["tsme"], "ids_per_batch": 2, "images_per_id": 6, "sample_with_replacement": False,
            "epochs": 1, "steps_per_epoch": 2}
    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "recipes": {"tsme": tsme}}})
    results = run_all(cfg, dataset="sysu", data_root=root, run_dir=tmp_path / "run", device=CPU, method="tsme")
    assert results["num_query"] == 2 * 2 * 2 and (tmp_path / "run" / "fusion" / "reid.pt").is_file()


def test_gray_partner_control_trains_and_tests_without_a_gan(sysu_tree, tiny_cfg, tmp_path):
    from common.data.images import to_grayscale_bt601
    from pipelines.partners import gray_translate

    run_dir = tmp_path / "gray"
    results = run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=run_dir, device=CPU, method="tsme", partners=PartnerKind.GRAY)
    assert not (run_dir / "gan").exists() and not (run_dir / "partner_cache").exists()
    state = torch.load(run_dir / "fusion" / "reid.pt", weights_only=False)
    assert state["partners"]["kind"] == "gray" and results["num_trials"] == 2
    # the partner: BT.601 gray for visible images (PIL's convert("L") values), the image itself for infrared ones
    images = torch.tensor([[[[255, 0, 0]]], [[[10, 20, 30]]]], dtype=torch.uint8)  # (2, 1, 1, 3)
    out = gray_translate(images, torch.tensor([False, True]))
    many = torch.randint(0, 256, (64, 8, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(gray_translate(many, torch.zeros(64, dtype=torch.bool)).numpy(), to_grayscale_bt601(many.numpy()))
    assert out[0, 0, 0].tolist() == [76, 76, 76]  # round(0.299 * 255) = 76
    assert out[1, 0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("method", ["mscmnet", "glmn"])
def test_train_fusion_and_test_through_the_cli(method, sysu_tree, tiny_cfg, tmp_path):
    from common.config import dump_config

    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_cfg))
    run_dir = tmp_path / method
    runner = CliRunner()
    res = runner.invoke(app, ["train-fusion", "--dataset", "sysu", "--data-root", str(sysu_tree), "--method", method,
                              "--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    state = torch.load(run_dir / "fusion" / "reid.pt", weights_only=False)
    assert state["method"] == method and state["epoch"] == 2
    res = runner.invoke(app, ["test", "--checkpoint", str(run_dir / "fusion" / "reid.pt"), "--dataset", "sysu",
                              "--data-root", str(sysu_tree), "--trials", "2", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["method"] == method and out["num_query"] == 4 * 2 * 2 and len(out["trials"]) == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["stage"] == "fusion"] == [1, 2]
    assert all(np.isfinite(r["loss_total"]) for r in records if r["stage"] == "fusion")


def test_two_deterministic_runs_give_identical_metrics(sysu_tree, tiny_cfg, tmp_path):
    from common.config import dump_config

    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_cfg))
    outputs = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "pipelines", "run-all", "--dataset", "sysu", "--data-root", str(sysu_tree),
                               "--method", "agw", "--config", str(config), "--run-dir", str(tmp_path / name), "--device", "cpu",
                               "--deterministic"], capture_output=True, text=True, cwd=tmp_path,
                              env={**__import__("os").environ, "VIREID_CACHE": str(tmp_path / f"cache-{name}")})
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(json.loads((tmp_path / name / "results.json").read_text()))
    a, b = outputs
    assert a["deterministic"] is True
    assert a["trials"] == b["trials"] and a["rank1"] == b["rank1"] and a["mean_ap"] == b["mean_ap"]
    wa = torch.load(tmp_path / "a" / "fusion" / "reid.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "fusion" / "reid.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
