"""Glue between stage 1 and stage 2: where a training or test image's partner comes from.

At test time stage 2 sees a ``PartnerSource``: ``partners(indices, images, is_ir) -> uint8``;
here it is built from the frozen generators. (Training reads the pair cache in its
DataLoader workers, or translates on the fly with ``stage1_dsgan.generate.make_translator``.)
"""

from __future__ import annotations

import numpy as np
import torch

from common.data.images import to_grayscale_bt601

#: The name of the trivial-partner control in checkpoints, configs and ``--pairs``.
GRAY_PARTNERS = "gray"


def gray_partners(images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
    """The trivial partner of the ``tsme-gray`` control: no GAN.

    A visible image's partner is its ITU-R BT.601 grayscale (what TSME's DSGAN takes as
    input, :func:`common.data.images.to_grayscale_bt601`); an infrared image's partner is the
    image itself. Training TSME's network on these instead of the DSGAN's translations
    separates what stage 1 contributes from what the second stream and its heads do.

    Args:
        images: uint8 (B, H, W, 3), any device.
        is_ir: bool (B,).

    Returns:
        uint8 (B, H, W, 3) CPU tensor.
    """
    arr = images.cpu().numpy()
    out = arr.copy()
    vis = ~is_ir.cpu().numpy().astype(bool)
    if vis.any():
        out[vis] = to_grayscale_bt601(arr[vis])
    return torch.from_numpy(out)


class MemoPartners:
    """Partners translated on demand by a frozen generator and kept per image index.

    The generators do not change during stage 2, so each test image is translated once
    even when it is evaluated every few epochs.

    Args:
        translate: ``translate(images uint8 (B, H, W, 3), is_ir bool (B,)) -> uint8``.
        count: number of images in the split.
    """

    def __init__(self, translate, count: int) -> None:
        self.translate = translate
        self.store: np.ndarray | None = None
        self.done = np.zeros(count, dtype=bool)

    def __call__(self, indices: np.ndarray, images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
        indices = np.asarray(indices)
        missing = ~self.done[indices]
        if missing.any():
            rows = np.flatnonzero(missing)
            out = self.translate(images[torch.from_numpy(rows)], is_ir[torch.from_numpy(rows)]).numpy()
            if self.store is None:
                self.store = np.empty((len(self.done), *out.shape[1:]), dtype=np.uint8)
            self.store[indices[rows]] = out
            self.done[indices[rows]] = True
        return torch.from_numpy(self.store[indices])
