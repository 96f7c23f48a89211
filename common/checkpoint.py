"""Checkpoints: one plain dict per file, written atomically, checked on load.

Every checkpoint carries ``kind`` (``"dsgan"`` or ``"reid"``), ``format`` (this module's
version) and ``config`` (the resolved config as a dict), so that loading the wrong file
(another model's checkpoint, a truncated download) gives a one-line error instead of a
traceback from deep inside ``load_state_dict``. Training checkpoints (``last.pt``) also hold
optimiser, scheduler and scaler states (torchvision references' layout); no RNG state is
needed, every epoch is seeded from (seed, epoch).

Loading is safe: ``torch.load(weights_only=True)`` unpickles tensors and plain containers
only, so a checkpoint from someone else cannot run code when it is opened; a file holding
anything else is refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write
from common.errors import UserError

FORMAT_VERSION = 1
KINDS = {"dsgan": "a stage-1 DSGAN checkpoint (pipeline train-gan)", "reid": "a stage-2 re-ID checkpoint (pipeline train-fusion)",
         "standin": "an unfinished ImageNet stand-in (pipeline pretrain)"}


def save_checkpoint(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Atomically ``torch.save`` ``payload`` plus ``kind`` and ``format`` to ``path``.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    data = {"kind": kind, "format": FORMAT_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write(Path(path), lambda fh: fh.write(buffer.getbuffer()))


def read_tensor_file(path: Path, what: str, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so that a
    file cannot run code when it is read; every way it can fail becomes one line.

    Args:
        path: an existing file (checkpoint, torchvision weights, the demo's stand-in).
        what: what the file is, for the message ("checkpoint", "pretrained weights").
        fix: what to pass instead, appended to a refusal of a file holding Python objects.

    Raises:
        UserError: the file holds Python objects other than tensors and plain containers
            (unpickling it could run code), or is truncated or not a PyTorch file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # torch's WeightsUnpickler met a class or function: code
            raise UserError(f"{what} {path} holds Python objects other than tensors and plain containers; it is refused "
                            f"because unpickling it could run code: {fix}") from None
        raise UserError(f"{what} {path} cannot be read ({str(exc).splitlines()[0][:120]}); it is truncated or not a PyTorch file") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{what} {path} cannot be read ({str(exc).splitlines()[0][:120]}); it is truncated or not a PyTorch file") from None


def load_checkpoint(path: Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check its kind.

    Raises:
        UserError: missing file, unreadable/truncated file, another kind of checkpoint,
            or a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the .pt file written by {KINDS[kind].split('(')[1].rstrip(')')}")
    data = read_tensor_file(path, "checkpoint", "use a checkpoint written by this pipeline (it never writes such files)",
                            map_location=map_location)
    if not isinstance(data, dict) or "kind" not in data:
        raise UserError(f"{path} is not a checkpoint of this pipeline; pass {KINDS[kind]}")
    if data["kind"] != kind:
        raise UserError(f"{path} is {KINDS.get(data['kind'], data['kind'])}, but {KINDS[kind]} is needed here")
    if data.get("format", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer version of this pipeline; upgrade the package")
    return data


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
