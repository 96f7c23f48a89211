"""Translation quality on aligned visible/infrared pairs (e.g. RoadScene, FusionDN AAAI 2020).

For each held-out pair, the visible image is translated to infrared by ``g_vis2ir`` and
compared with the real, pixel-aligned infrared image; the trivial baseline compares the
visible image's BT.601 grayscale with it. Both are scored at the generator's image size,
on one luminance channel in [0, 1]:

* L1: mean absolute difference (0-1 scale; lower is better);
* PSNR: ``kornia.metrics.psnr`` with max value 1, in dB, averaged over images;
* SSIM: ``kornia.metrics.ssim`` with an 11 x 11 Gaussian window, averaged over pixels and
  images (Wang et al., IEEE TIP 2004);
* two-sample: the classifier two-sample test (:func:`stage1_dsgan.realism.two_sample_score`)
  of the translations against real images of the target domain, which needs no alignment:
  held-out accuracy, 0.5 = indistinguishable, 1.0 = always told apart; visible -> infrared
  (``vis2ir``) and infrared -> visible-gray (``ir2vis``). The baseline's figure treats the
  untranslated gray image as the translation.

:func:`evaluate_gan_on_split` scores the two-sample test alone on any dataset's training
split (no aligned pairs needed), on the images the GAN held out for choosing its epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch

from common.data.augment import to_float_images
from common.datasets.pairs import aligned_pairs, split_pairs
from common.errors import UserError
from common.data.images import read_image, to_grayscale_bt601
from stage1_dsgan.generate import load_generators, make_translator
from stage1_dsgan.realism import two_sample_score
from stage1_dsgan.select import held_out_indices


def _scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """pred, target: (N, 1, H, W) float in [0, 1] -> mean L1, PSNR (dB), SSIM."""
    l1 = (pred - target).abs().mean().item()
    psnr = torch.stack([kornia.metrics.psnr(pred[i : i + 1], target[i : i + 1], 1.0) for i in range(len(pred))]).mean().item()
    ssim = kornia.metrics.ssim(pred, target, window_size=11, max_val=1.0).mean().item()
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def _luma(images_u8: np.ndarray) -> torch.Tensor:
    x = to_float_images(torch.from_numpy(images_u8), torch.device("cpu"))
    return kornia.color.rgb_to_grayscale(x)  # (N, 1, H, W) in [0, 1]


@torch.no_grad()
def evaluate_gan(checkpoint: Path, data_root: Path, device: torch.device, *, held_out_only: bool = True, batch_size: int = 16) -> dict[str, Any]:
    """Score a DSGAN's visible -> infrared translation against real aligned infrared images.

    Args:
        checkpoint: ``gan.pt``.
        data_root: folder with ``visible/`` and ``infrared/`` (matched by file name).
        device: where the generator runs.
        held_out_only: score only the held-out pairs of the deterministic split
            (:func:`common.datasets.pairs.split_pairs`); False scores all pairs.

    Returns:
        ``{"model": {"l1", "psnr", "ssim", "two_sample_vis2ir", "two_sample_ir2vis"},
        "baseline": {...}, "pairs": N, "image_size": [H, W]}``.

    Raises:
        UserError: missing/invalid checkpoint or folder, no pairs to score.
    """
    pairs = aligned_pairs(Path(data_root))
    if held_out_only:
        pairs = split_pairs(pairs)[1]
    if not pairs:
        raise UserError(f"{data_root} has no held-out pairs to score; use --split all")
    return evaluate_gan_pairs(checkpoint, [(v, i) for _, v, i in pairs], device, batch_size=batch_size)


@torch.no_grad()
def evaluate_gan_pairs(checkpoint: Path, pairs: list[tuple[Path, Path]], device: torch.device, *, batch_size: int = 16) -> dict[str, Any]:
    """Score a DSGAN on (visible image, pixel-aligned real infrared image) file pairs: an
    aligned folder's, or the demo's visible images with their ``aligned_nir`` twins (same
    scene rendered in near-infrared, :mod:`common.demo`).

    Returns:
        As :func:`evaluate_gan`.

    Raises:
        UserError: missing/invalid checkpoint, unreadable images, no pairs.
    """
    if not pairs:
        raise UserError("no aligned pairs to score")
    gens = load_generators(checkpoint, device)
    pairs = [("", v, i) for v, i in pairs]
    size = tuple(gens.image_size)
    vis = np.stack([read_image(v, size) for _, v, _ in pairs])
    ir = np.stack([read_image(i, size) for _, _, i in pairs])
    translate = make_translator(gens, device)
    fake_ir = _translate_all(translate, vis, is_ir=False, batch_size=batch_size)
    fake_vis = _translate_all(translate, ir, is_ir=True, batch_size=batch_size)
    target = _luma(ir)
    model, baseline = _scores(_luma(fake_ir), target), _scores(_luma(vis), target)
    model.update(_two_sample(vis, ir, fake_ir, fake_vis))
    baseline.update(_two_sample(vis, ir, to_grayscale_bt601(vis), ir))
    return {"model": model, "baseline": baseline, "pairs": len(pairs), "image_size": list(size), "checkpoint": str(checkpoint)}


def _translate_all(translate, images: np.ndarray, *, is_ir: bool, batch_size: int) -> np.ndarray:
    return np.concatenate([
        translate(torch.from_numpy(np.ascontiguousarray(images[b : b + batch_size])),
                  torch.full((len(images[b : b + batch_size]),), is_ir, dtype=torch.bool)).numpy()
        for b in range(0, len(images), batch_size)
    ])


def _two_sample(vis: np.ndarray, ir: np.ndarray, fake_ir: np.ndarray, fake_vis: np.ndarray) -> dict[str, float]:
    """Two-sample accuracies: translated visible vs real infrared, translated infrared vs real visible-gray."""
    return {"two_sample_vis2ir": two_sample_score(ir, fake_ir)["accuracy"],
            "two_sample_ir2vis": two_sample_score(to_grayscale_bt601(vis), fake_vis)["accuracy"]}


@torch.no_grad()
def evaluate_gan_on_split(checkpoint: Path, split, device: torch.device, *, batch_size: int = 64) -> dict[str, Any]:
    """The two-sample test of a DSGAN on a dataset's training split (no aligned pairs needed).

    Scores the images the GAN held out of training to choose its epoch (the same seeded
    subset, from the checkpoint's ``gan.seed`` and ``gan.select_images``); the baseline
    takes the untranslated gray image as the translation.

    Args:
        split: the training split at the generator's image size
            (:class:`common.data.array_cache.ArraySplit`).

    Returns:
        ``{"model": {"two_sample_vis2ir", "two_sample_ir2vis"}, "baseline": {...},
        "images": {"vis": n, "ir": m}, "image_size": [H, W]}``.

    Raises:
        UserError: a split at another size than the generator's, or too few images.
    """
    from common.checkpoint import load_checkpoint

    gens = load_generators(checkpoint, device)
    if tuple(split.images.shape[1:3]) != tuple(gens.image_size):
        raise UserError(f"the split is at {split.images.shape[1]}x{split.images.shape[2]}, the generator at "
                        f"{gens.image_size[0]}x{gens.image_size[1]}")
    gan = load_checkpoint(checkpoint, "dsgan")["gan"]
    held = held_out_indices(split.is_ir, gan.get("select_images", 200), gan.get("seed", 0))
    vis, ir = np.asarray(split.images[held[~split.is_ir[held]]]), np.asarray(split.images[held[split.is_ir[held]]])
    if min(len(vis), len(ir)) < 8:
        raise UserError(f"only {len(vis)} visible / {len(ir)} infrared held-out images: the two-sample test needs at least 8 of each")
    translate = make_translator(gens, device)
    fake_ir = _translate_all(translate, vis, is_ir=False, batch_size=batch_size)
    fake_vis = _translate_all(translate, ir, is_ir=True, batch_size=batch_size)
    return {"model": _two_sample(vis, ir, fake_ir, fake_vis), "baseline": _two_sample(vis, ir, to_grayscale_bt601(vis), ir),
            "images": {"vis": len(vis), "ir": len(ir)}, "image_size": list(gens.image_size), "checkpoint": str(checkpoint)}
