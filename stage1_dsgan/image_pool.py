"""A history of generated images shown to the discriminators (Shrivastava et al., CVPR
2017, Sec. 2.3; CycleGAN Sec. 4, pool of 50).

Batched version of the CycleGAN/PyTorch-GAN buffer: while the pool is filling, incoming
images are stored and returned; once full, each incoming image is, with probability 1/2,
swapped for a stored one (returned instead, and replaced by the new image), otherwise
returned as is. Within one batch the swapped slots are distinct (a random permutation), a
deviation from the sequential reference only when one batch would pick a slot twice.
"""

from __future__ import annotations

import torch


class ImagePool:
    """Tensor history pool.

    Args:
        size: images kept (0 disables the pool: ``query`` returns its input).

    Shapes:
        ``query(images)``: (B, C, H, W) -> (B, C, H, W), same dtype/device, detached.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.buffer: torch.Tensor | None = None
        self.count = 0

    def query(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        if self.buffer is None:
            self.buffer = torch.empty((self.size, *images.shape[1:]), dtype=images.dtype, device=images.device)
        out = images.clone()
        n_fill = min(self.size - self.count, images.shape[0])
        if n_fill > 0:
            self.buffer[self.count : self.count + n_fill] = images[:n_fill]
            self.count += n_fill
        rest = images[n_fill:]
        if rest.shape[0] == 0:
            return out
        swap = torch.rand(rest.shape[0], generator=generator) < 0.5
        rows = torch.nonzero(swap).squeeze(1)[: self.size]  # at most one swap per slot
        if rows.numel():
            slots = torch.randperm(self.size, generator=generator)[: rows.numel()].to(images.device)
            rows = rows.to(images.device) + n_fill
            out[rows] = self.buffer[slots]
            self.buffer[slots] = images[rows]
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "count": self.count, "buffer": None if self.buffer is None else self.buffer.cpu()}

    def load_state_dict(self, state: dict, device: torch.device | None = None) -> None:
        self.size, self.count = state["size"], state["count"]
        buf = state["buffer"]
        self.buffer = None if buf is None else buf.to(device or "cpu")
