"""Stage 1 keeps the generators of the best epoch by a measure, records why, and writes
gray partners (three equal channels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from stage2_fusion.methods import load_config
from common.errors import UserError
from pipelines.data import load_splits
from pipelines.stages import partner_cache_stage as stage_generate_pairs, train_gan_stage as stage_train_gan
from stage1_dsgan.select import SelectionSet, held_out_indices, score_generators
from tests.conftest import TINY_OVERRIDES

CPU = torch.device("cpu")


def test_held_out_indices_are_seeded_and_leave_most_images_to_train():
    is_ir = np.array([False] * 30 + [True] * 12)
    a = held_out_indices(is_ir, 50, seed=0)
    assert np.array_equal(a, held_out_indices(is_ir, 50, seed=0)) and not np.array_equal(a, held_out_indices(is_ir, 50, seed=1))
    assert (~is_ir[a]).sum() == 10 and is_ir[a].sum() == 4  # at most a third of each modality
    assert len(held_out_indices(is_ir, 3, seed=0)) == 6


def test_score_generators_two_sample_and_psnr():
    rng = np.random.default_rng(0)
    vis = rng.integers(0, 256, size=(24, 32, 16, 3), dtype=np.uint8)
    from common.data.images import to_grayscale_bt601

    ir = to_grayscale_bt601(vis)  # what an identity "translation" of the gray visible image gives

    from common.data.augment import to_gan_domain

    class Identity(torch.nn.Module):
        prepare = staticmethod(to_gan_domain)  # a generator's input: the gray copy in [-1, 1]

        def forward(self, x):
            return x

    aligned = SelectionSet(vis, ir, aligned=True)
    psnr = score_generators(Identity(), Identity(), aligned, "psnr", CPU)
    assert psnr["score"] == psnr["psnr"] > 40  # the gray image of vis is (almost) ir itself
    two = score_generators(Identity(), Identity(), SelectionSet(vis, ir, aligned=False), "two-sample", CPU)
    assert two["score"] == pytest.approx(-(two["two_sample_vis2ir"] + two["two_sample_ir2vis"]) / 2)
    with pytest.raises(ValueError, match="aligned pairs"):
        score_generators(Identity(), Identity(), SelectionSet(vis, ir, aligned=False), "psnr", CPU)


def test_gan_keeps_the_best_epoch_by_its_measure(sysu_tree, tmp_path):
    """Our options (two-sample epoch selection, one gray output channel), set explicitly: the
    profiles keep PyTorch-GAN's last epoch and TSME's three channels."""
    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "gan": {**TINY_OVERRIDES["gan"], "epochs": 3, "decay_start_epoch": 2,
                                                                    "select_by": "two-sample", "out_channels": 1}})
    splits = load_splits(cfg, "sysu", sysu_tree, with_test=False)
    gan = stage_train_gan(cfg, splits, tmp_path / "run", CPU)
    state = load_checkpoint(gan, "dsgan")
    sel = state["selection"]
    assert sel["measure"] == "two-sample" and [h["epoch"] for h in sel["history"]] == [1, 2, 3]
    best = max(sel["history"], key=lambda h: h["score"])
    assert sel["epoch"] == best["epoch"] and sel["score"] == best["score"]
    assert all(0.0 <= h["two_sample_vis2ir"] <= 1.0 for h in sel["history"])
    last = load_checkpoint(tmp_path / "run" / "gan" / "last.pt", "dsgan")
    for name, value in state["g_vis2ir"].items():  # gan.pt holds the chosen epoch's generator
        assert torch.equal(value, last["best"]["g_vis2ir"][name])
    # the partners of a gray generator have three equal channels
    cache = stage_generate_pairs(gan, splits, tmp_path / "pairs", CPU)
    partners = cache[np.arange(len(cache))]
    assert (partners == partners[..., :1]).all()


def test_aligned_folder_selects_by_psnr_on_its_held_out_pairs(tmp_path):
    from tests.conftest import write_jpeg

    rng = np.random.default_rng(0)
    for i in range(60):  # 49 training pairs (8 held out of GAN training to choose the epoch), 11 evaluation pairs
        vis = rng.integers(0, 256, size=(32, 16, 3))
        write_jpeg(tmp_path / "pairs" / "visible" / f"{i:03d}.jpg", vis)
        write_jpeg(tmp_path / "pairs" / "infrared" / f"{i:03d}.jpg", np.repeat(vis.mean(-1, keepdims=True), 3, -1))
    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "gan": {**TINY_OVERRIDES["gan"], "select_by": "psnr"}})
    splits = load_splits(cfg, "pairs", tmp_path / "pairs", with_test=False)
    state = load_checkpoint(stage_train_gan(cfg, splits, tmp_path / "run", CPU), "dsgan")
    assert state["selection"]["measure"] == "psnr" and "aligned training pairs" in state["selection"]["held_out"]
    assert all("psnr" in h for h in state["selection"]["history"])


@pytest.mark.e2e
def test_eval_gan_reports_two_sample_next_to_l1_psnr_ssim(sysu_tree, tmp_path):
    import json

    from typer.testing import CliRunner

    from pipelines.cli import app
    from tests.conftest import write_jpeg

    rng = np.random.default_rng(1)
    for i in range(60):
        vis = rng.integers(0, 256, size=(32, 16, 3))
        write_jpeg(tmp_path / "pairs" / "visible" / f"{i:03d}.jpg", vis)
        write_jpeg(tmp_path / "pairs" / "infrared" / f"{i:03d}.jpg", 255 - np.repeat(vis.mean(-1, keepdims=True), 3, -1))
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    gan = stage_train_gan(cfg, load_splits(cfg, "pairs", tmp_path / "pairs", with_test=False), tmp_path / "run", CPU)
    res = CliRunner().invoke(app, ["eval-gan", "--checkpoint", str(gan), "--data-root", str(tmp_path / "pairs"), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["pairs"] == 11 and set(out["model"]) == {"l1", "psnr", "ssim", "two_sample_vis2ir", "two_sample_ir2vis"}
    # the baseline "translation" of an infrared image is the image itself: indistinguishable from real infrared
    assert out["baseline"]["two_sample_ir2vis"] >= 0.0 and 0.0 <= out["model"]["two_sample_vis2ir"] <= 1.0
    text = CliRunner().invoke(app, ["eval-gan", "--checkpoint", str(gan), "--data-root", str(tmp_path / "pairs"), "--device", "cpu"]).stdout
    assert "2-sample v->i" in text and "PSNR dB" in text
    # on a re-ID dataset's training split: the two-sample test alone
    sysu_gan = stage_train_gan(cfg, load_splits(cfg, "sysu", sysu_tree, with_test=False), tmp_path / "sysu", CPU)
    res = CliRunner().invoke(app, ["eval-gan", "--checkpoint", str(sysu_gan), "--dataset", "sysu", "--data-root", str(sysu_tree),
                                   "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["model"]) == {"two_sample_vis2ir", "two_sample_ir2vis"} and out["images"] == {"vis": 21, "ir": 10}


def test_held_out_pairs_keep_whole_pairs_aligned():
    from stage1_dsgan.select import held_out_pairs

    pids = np.repeat(np.arange(30), 2)
    is_ir = np.tile([False, True], 30)
    held = held_out_pairs(pids, is_ir, 100, seed=0)
    assert len(held) == 2 * 5  # a sixth of 30 pairs
    vis, ir = held[~is_ir[held]], held[is_ir[held]]
    assert np.array_equal(pids[vis], pids[ir])  # vis[i] and ir[i] are the same pair


def test_eval_gan_on_the_demo_scores_against_its_aligned_near_infrared_twins(tmp_path):
    """eval-gan --dataset demo pairs each visible test image (identities the GAN never saw)
    with its aligned_nir twin: the JSON has the aligned folders' shape plus the partners'
    raw-pixel Rank-1 and the twins' own row, one pair per visible test image, and the
    baseline L1 is the grayscale visible image against the twin, recomputed here by hand."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from common.demo.writing import make_demo
    from pipelines.cli import app

    root = make_demo(tmp_path / "demo", seed=0, n_train=3, n_val=1, n_test=1, image_size=(32, 16))
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    splits = load_splits(cfg, "demo", root)
    gan = stage_train_gan(cfg, splits, tmp_path / "run", CPU)
    res = CliRunner().invoke(app, ["eval-gan", "--checkpoint", str(gan), "--dataset", "demo", "--data-root", str(root), "--json",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    visible = [s for s in splits.index.test if s.modality == "vis"]
    assert out["pairs"] == len(visible)
    assert set(out["model"]) == {"l1", "psnr", "ssim", "partner_rank1", "two_sample_vis2ir", "two_sample_ir2vis"}
    assert out["twin"]["l1"] == 0 and out["twin"]["partner_rank1"] == 100.0  # one test identity: every query finds it
    luma = np.array([0.299, 0.587, 0.114])
    l1 = []
    for s in visible:
        gray = np.asarray(Image.open(s.path), np.float64) @ luma / 255.0
        twin = np.asarray(Image.open(root / "aligned_nir" / Path(s.path).relative_to(root)), np.float64) @ luma / 255.0
        l1.append(np.abs(gray - twin).mean())
    assert out["baseline"]["l1"] == pytest.approx(np.mean(l1), abs=0.01)
    (root / "aligned_nir").rename(tmp_path / "gone")
    res = CliRunner().invoke(app, ["eval-gan", "--checkpoint", str(gan), "--dataset", "demo", "--data-root", str(root), "--device", "cpu"])
    assert isinstance(res.exception, UserError) and "aligned_nir" in str(res.exception) and "make-demo" in str(res.exception)
