"""Shared fixtures: tiny dataset trees with real JPEG files, an isolated array cache, and a
tiny configuration that trains in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.config import load_config


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
            "decay_start_epoch": 1, "steps_per_epoch": 3, "batch_size": 4, "image_every": 2},
    "fusion": {"embed_dim": 16, "backbone": {"layers": [1, 1, 1, 1], "base_width": 8, "nonlocal_blocks": [0, 1, 1, 0]},
               "recipes": {"tsme": {"ids_per_batch": 2, "images_per_id": 2, "epochs": 2, "steps_per_epoch": 3, "milestones": [], "lr": 0.01,
                                    "eval_every": 1},
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
# (MSCMNet at lr 0.0003: its MIMB layer-normalises channel tokens of H/16 x W/16 = 2 values at
# 32 x 16, whose gradients are large; at the demo's 18 and the paper's 288 values they are not.
# At 0.001 its eval-mode activations overflowed in epoch 2 on a 2-core CPU (NaN test features
# with finite weights), which the non-finite guard now stops.)


@pytest.fixture
def tiny_cfg():
    """The demo profile shrunk to run a whole pipeline in seconds (32 x 16 images)."""
    return load_config("demo", overrides=TINY_OVERRIDES)
