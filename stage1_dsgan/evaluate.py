"""Translation quality on aligned visible/infrared pairs (e.g. RoadScene, FusionDN AAAI 2020).

For each held-out pair, the visible image is translated to infrared by ``g_vis2ir`` and
compared with the real, pixel-aligned infrared image; the trivial baseline compares the
visible image's BT.601 grayscale with it. Both are scored at the generator's image size,
on one luminance channel in [0, 1]:

* L1: mean absolute difference (0-1 scale; lower is better);
* PSNR: ``kornia.metrics.psnr`` with max value 1, in dB, averaged over images;
* SSIM: ``kornia.metrics.ssim`` with an 11 x 11 Gaussian window, averaged over pixels and
  images (Wang et al., IEEE TIP 2004).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch

from common.augment import to_float_images
from common.datasets.pairs import aligned_pairs, split_pairs
from common.errors import UserError
from common.images import read_image
from stage1_dsgan.generate import load_generators, make_translator


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
        ``{"model": {"l1", "psnr", "ssim"}, "baseline": {...}, "pairs": N, "image_size": [H, W]}``.

    Raises:
        UserError: missing/invalid checkpoint or folder, no pairs to score.
    """
    gens = load_generators(checkpoint, device)
    pairs = aligned_pairs(Path(data_root))
    if held_out_only:
        pairs = split_pairs(pairs)[1]
    if not pairs:
        raise UserError(f"{data_root} has no held-out pairs to score; use --split all")
    size = tuple(gens.image_size)
    vis = np.stack([read_image(v, size) for _, v, _ in pairs])
    ir = np.stack([read_image(i, size) for _, _, i in pairs])
    translate = make_translator(gens, device)
    fake_ir = np.concatenate([
        translate(torch.from_numpy(vis[b : b + batch_size]), torch.zeros(len(vis[b : b + batch_size]), dtype=torch.bool)).numpy()
        for b in range(0, len(vis), batch_size)
    ])
    target = _luma(ir)
    return {
        "model": _scores(_luma(fake_ir), target),
        "baseline": _scores(_luma(vis), target),
        "pairs": len(pairs),
        "image_size": list(size),
        "checkpoint": str(checkpoint),
    }
