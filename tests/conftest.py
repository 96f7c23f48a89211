"""Shared fixtures: tiny dataset trees with real JPEG files, an isolated array cache, and a
tiny configuration that trains in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stage2_fusion.methods import load_config


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=90)


def make_sysu_tree(
    root: Path,
    train_ids: list[int],
    val_ids: list[int],
    test_ids: list[int],
    *,
    per_cam: int = 2,
    size: tuple[int, int] = (32, 16),
    missing: dict[int, list[int]] | None = None,
    seed: int = 0,
) -> Path:
    """A SYSU-MM01-layout tree: cam1..cam6/<4-digit id>/<4-digit n>.jpg and exp/*.txt.

    Each identity gets a colour (visible cams) and a brightness (infrared cams, saved as
    three equal channels) plus noise, so images differ by identity and modality.
    ``missing`` maps a pid to cameras it does not appear in.
    """
    rng = np.random.default_rng(seed)
    missing = missing or {}
    h, w = size
    for pid in train_ids + val_ids + test_ids:
        colour = rng.integers(30, 225, size=3)
        heat = rng.integers(40, 215)
        for cam in range(1, 7):
            if cam in missing.get(pid, []):
                continue
            for n in range(1, per_cam + 1):
                noise = rng.normal(0, 12, size=(h, w, 3))
                if cam in (3, 6):
                    img = np.clip(heat + noise[..., :1], 0, 255).repeat(3, axis=2)
                else:
                    img = np.clip(colour + noise, 0, 255)
                write_jpeg(root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", img)
    exp = root / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train_id.txt", train_ids), ("val_id.txt", val_ids), ("test_id.txt", test_ids)):
        (exp / name).write_text(",".join(str(i) for i in ids))
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test decodes into its own array cache, never ~/.cache."""
    monkeypatch.setenv("VIREID_CACHE", str(tmp_path_factory.mktemp("array-cache")))


@pytest.fixture(scope="session")
def sysu_tree(tmp_path_factory) -> Path:
    """A small SYSU-layout tree: 6 train + 2 val + 4 test ids, 2 images per camera,
    pid 12 without camera 1 and 2 (so indoor-search has no gallery for it)."""
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    return make_sysu_tree(root, [1, 2, 3, 5, 7, 8], [9, 10], [11, 12, 14, 15], missing={12: [1, 2]})


TINY_OVERRIDES = {
    "data": {"height": 32, "width": 16, "decode_threads": 1},
    "gan": {"encoder_layers": [1, 1, 1, 1], "base_width": 8, "disc_widths": [8, 8, 16, 16], "epochs": 2,
            "decay_start_epoch": 1, "steps_per_epoch": 3, "batch_size": 4, "image_every": 2, "pretrained": "none"},
    "fusion": {"vgg16": "none",
               "backbone": {"layers": [1, 1, 1, 1], "base_width": 8, "nonlocal_blocks": [0, 1, 1, 0], "pretrained": "none"},
               "recipes": {"tsme": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 3, "milestones": [], "lr": 0.01,
                                    "eval_every": 1, "embed_dim": 16, "streams": "agw"},
                           "agw": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 3, "milestones": [], "lr": 0.01,
                                   "warmup_epochs": 0, "pad": 2, "eval_every": 1},
                           "mso": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 3, "milestones": [],
                                   "pad": 2, "eval_every": 1, "pef_stages": 1},
                           "mscmnet": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 4, "milestones": [],
                                       "lr": 0.0003, "warmup_epochs": 1, "pad": 2, "eval_every": 1},
                           "glmn": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 2, "milestones": [],
                                    "lr": 0.01, "warmup_epochs": 1, "pad": 2, "eval_every": 1}}},
    "eval": {"trials": 2, "batch_size": 16},
}
# (TSME's streams "agw": the tests that reach into TSME's two backbones use the shared-body layout;
# tests/test_tsme.py checks the paper layout (four ResNets) the profiles use.
# pretrained "none": the tiny networks start from scratch; tests/test_standin.py builds and
# loads tiny ImageNet stand-ins through the same path as the demo profile's "demo-standin")
#: A stand-in recipe that builds in about a second (tests/test_standin.py).
TINY_PRETRAIN = {"identities": 6, "images_per_identity": 3, "held_out_per_identity": 1, "epochs": 1, "batch_size": 6}
# (MSCMNet at lr 0.0003: its MIMB layer-normalises channel tokens of H/16 x W/16 = 2 values at
# 32 x 16, whose gradients are large; at the demo's 18 and the paper's 288 values they are not.
# At 0.001 its eval-mode activations overflowed in epoch 2 on a 2-core CPU (NaN test features
# with finite weights), which the non-finite guard now stops.)


@pytest.fixture
def tiny_cfg():
    """The demo profile shrunk to run a whole pipeline in seconds (32 x 16 images)."""
    return load_config("demo", overrides=TINY_OVERRIDES)


INFERENCE_METHODS = ("agw", "tsme", "mso", "mscmnet", "glmn")


@pytest.fixture(scope="session")
def trained_checkpoints(sysu_tree, tmp_path_factory) -> dict:
    """``reid.pt`` of every method trained for one short epoch (2 steps) on the SYSU-layout
    tree, TSME with its DSGAN (1 epoch of 2 steps) and partner cache: real checkpoints for the
    extract / search / export tests. Keys: the method names -> ``reid.pt``; ``"splits"`` ->
    {method: :class:`pipelines.data.Splits` decoded at that checkpoint's size}; ``"gan"`` ->
    TSME's ``gan.pt``.

    MSCMNet trains at 64 x 32 (its recipe's size): at 32 x 16 its MIMB layer-normalises tokens
    of H/16 x W/16 = 2 values, which makes its features ill-conditioned (1e-6 on the input
    moves them by 7e-5, and PyTorch's own batch-1 and batch-28 results differ by 1e-5), too
    close to call for a 1e-4 comparison of two runtimes; at 64 x 32 (8 values) they are not."""
    import torch

    from common.config import for_method
    from pipelines.data import load_splits
    from pipelines.partners import PartnerSource
    from pipelines.stages import partner_cache_stage, train_gan_stage, train_reid_stage

    base = tmp_path_factory.mktemp("trained")
    recipes = {m: {**TINY_OVERRIDES["fusion"]["recipes"][m], "epochs": 1, "steps_per_epoch": 2, "eval_every": 0}
               for m in INFERENCE_METHODS}
    recipes["mscmnet"].update({"height": 64, "width": 32})
    cfg = load_config("demo", overrides={**TINY_OVERRIDES,
                                         "gan": {**TINY_OVERRIDES["gan"], "epochs": 1, "decay_start_epoch": 0, "steps_per_epoch": 2},
                                         "fusion": {**TINY_OVERRIDES["fusion"], "recipes": recipes}})
    cpu = torch.device("cpu")
    splits = load_splits(cfg, "sysu", sysu_tree, cache_dir=base / "cache")
    gan = train_gan_stage(cfg, splits, base / "tsme", cpu)
    cache = partner_cache_stage(gan, splits, base / "tsme" / "partner_cache", cpu)
    out: dict = {"splits": {}, "gan": gan}
    for method in INFERENCE_METHODS:
        method_cfg = for_method(cfg, method)
        method_splits = splits if method != "mscmnet" else load_splits(method_cfg, "sysu", sysu_tree, cache_dir=base / "cache")
        out["splits"][method] = method_splits
        source = PartnerSource.from_cache(cache) if method == "tsme" else None
        out[method] = train_reid_stage(method_cfg, method, method_splits, source, base / method, cpu, cache=cache)
    return out
