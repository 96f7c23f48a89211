"""Device choice, seeding and mixed precision: the few runtime switches every stage shares."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from common.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``--device auto|cpu|cuda`` into a :class:`torch.device`.

    ``auto`` picks CUDA when available, else CPU.

    Raises:
        UserError: for an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    if name not in DEVICE_CHOICES:
        raise UserError(f"--device {name!r} is unknown; use one of: {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, derived from the run seed.

    Seeding every epoch from ``(seed, epoch)`` makes an epoch's sampling and augmentation
    independent of whether the run was resumed, so a resumed run reaches the same weights
    as an uninterrupted one.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled`` (and supported), a no-op context elsewhere.

    CPU training stays in fp32: CPU autocast is slower than fp32 for convolutions here.
    """
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
