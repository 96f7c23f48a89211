"""Which epoch's generators stage 1 keeps: chosen by a measure, not by the last epoch.

Unpaired GAN training has no loss that says when the translations are best (the
adversarial game does not converge; on RoadScene longer training lowered SSIM). At the end
of every epoch the generators translate a fixed held-out set and are scored:

* ``"two-sample"`` (any data): the classifier two-sample test
  (:func:`stage1_dsgan.realism.two_sample_score`) of translated visible images against real
  infrared ones, and of translated infrared images against real visible-gray ones; the
  score is the mean of the two held-out accuracies (0.5 = indistinguishable, lower is
  better);
* ``"psnr"`` (aligned pairs only, e.g. RoadScene's held-out pairs): the PSNR of the
  translated visible images against their pixel-aligned real infrared images (higher is
  better).

``gan.pt`` keeps the generators of the best-scoring epoch and records every epoch's score.
For re-ID datasets the held-out images are a seeded subset of the training split
(``gan.select_images`` per modality) that the GAN does not train on; for an aligned folder
they are whole training pairs held out of GAN training (its evaluation pairs, scored by
``eval-gan``, are never used to choose).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import numpy as np
import torch

from common.data.augment import from_gan_domain, to_float_images
from common.data.images import to_grayscale_bt601
from stage1_dsgan.realism import two_sample_score

MEASURES = ("two-sample", "psnr", "last")


@dataclass(frozen=True)
class SelectionSet:
    """Held-out images for choosing the epoch.

    Attributes:
        vis: uint8 (N, H, W, 3) real visible images (translated to infrared).
        ir: uint8 (M, H, W, 3) real infrared images (translated to visible-gray).
        aligned: ``vis[i]`` and ``ir[i]`` are pixel-aligned pairs (PSNR is possible).
    """

    vis: np.ndarray
    ir: np.ndarray
    aligned: bool


def held_out_indices(is_ir: np.ndarray, per_modality: int, seed: int) -> np.ndarray:
    """A seeded subset of a training split, ``per_modality`` images of each modality (at most
    a third of a modality, so most images still train the GAN): int64 indices, sorted."""
    rng = np.random.default_rng([seed, 7])
    picked = []
    for flag in (False, True):
        idx = np.flatnonzero(is_ir == flag)
        k = min(per_modality, len(idx) // 3)
        picked.append(rng.choice(idx, k, replace=False) if k else idx[:0])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def held_out_pairs(pids: np.ndarray, is_ir: np.ndarray, per_modality: int, seed: int) -> np.ndarray:
    """A seeded subset of whole aligned pairs (an aligned folder's training split, pair = pid):
    at most ``per_modality`` pairs and a sixth of them; int64 indices sorted, visible and
    infrared rows of each pair in pid order (so ``vis[i]`` and ``ir[i]`` stay aligned)."""
    pair_ids = np.unique(pids)
    k = min(per_modality, len(pair_ids) // 6)
    chosen = np.random.default_rng([seed, 11]).choice(pair_ids, k, replace=False) if k else pair_ids[:0]
    return np.flatnonzero(np.isin(pids, chosen)).astype(np.int64)


def _translate(generator: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for b in range(0, len(images), batch):
            x = generator.prepare(to_float_images(torch.from_numpy(np.ascontiguousarray(images[b : b + batch])), device))
            out.append(from_gan_domain(generator(x)).numpy())
    return np.concatenate(out)


def score_generators(g_vis2ir: torch.nn.Module, g_ir2vis: torch.nn.Module, selection: SelectionSet, measure: str,
                     device: torch.device, *, seed: int = 0) -> dict[str, float]:
    """Score one epoch's generators on the held-out set (see the module docstring).

    Returns:
        ``{"score": s}`` where a larger ``s`` is better (``-accuracy`` for two-sample,
        PSNR in dB for psnr), plus the parts: ``two_sample_vis2ir``, ``two_sample_ir2vis``
        (held-out accuracies) or ``psnr``.

    Raises:
        ValueError: an unknown measure, or "psnr" without aligned pairs.
    """
    if measure not in ("two-sample", "psnr"):
        raise ValueError(f"measure must be 'two-sample' or 'psnr', got {measure!r}")
    if measure == "psnr" and not selection.aligned:
        raise ValueError("the psnr measure needs aligned pairs")
    modes = [(m, m.training) for m in (g_vis2ir, g_ir2vis)]
    for m, _ in modes:
        m.eval()
    try:
        fake_ir = _translate(g_vis2ir, selection.vis, device)
        if measure == "psnr":
            pred = kornia.color.rgb_to_grayscale(to_float_images(torch.from_numpy(fake_ir), torch.device("cpu")))
            target = kornia.color.rgb_to_grayscale(to_float_images(torch.from_numpy(np.ascontiguousarray(selection.ir)), torch.device("cpu")))
            psnr = torch.stack([kornia.metrics.psnr(pred[i : i + 1], target[i : i + 1], 1.0) for i in range(len(pred))]).mean().item()
            return {"score": psnr, "psnr": psnr}
        fake_vis = _translate(g_ir2vis, selection.ir, device)
        a = two_sample_score(selection.ir, fake_ir, seed=seed)["accuracy"]
        b = two_sample_score(to_grayscale_bt601(selection.vis), fake_vis, seed=seed)["accuracy"]
        return {"score": -(a + b) / 2, "two_sample_vis2ir": a, "two_sample_ir2vis": b}
    finally:
        for m, was_training in modes:
            m.train(was_training)
