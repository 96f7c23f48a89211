"""Each split decoded and resized once into a uint8 array on disk, memory-mapped after.

Training never decodes JPEGs per epoch: a split's images are decoded (threads), resized
to the run's (H, W) and stored as one ``.npy`` file of shape (N, H, W, 3). The file name
carries a fingerprint of the file list (path, size, modification time, pid, camera,
modality) and the size, so any change in the source makes a new cache instead of reusing
a stale one.

The cache folder defaults to ``$VIREID_CACHE`` or ``~/.cache/vireid``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import unwritable_error
from common.datasets.base import Sample, split_arrays
from common.errors import UserError
from common.data.images import read_image
from common.runlog import progress_bar

CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$VIREID_CACHE`` if set, else ``~/.cache/vireid``."""
    env = os.environ.get("VIREID_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vireid"


def split_fingerprint(samples: list[Sample], size: tuple[int, int]) -> str:
    """SHA-256 (hex) over the split's file list, file sizes and mtimes, labels and (H, W).

    Raises:
        UserError: if a listed file is missing (names it).
    """
    digest = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{size[0]}x{size[1]}".encode())
    for s in samples:
        try:
            st = os.stat(s.path)
        except FileNotFoundError:
            raise UserError(f"image {s.path} is listed by the dataset but missing; restore the dataset copy") from None
        digest.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}|{s.pid}|{s.cam}|{s.modality}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ArraySplit:
    """A decoded split: images plus label columns, all aligned with the sample list.

    Attributes:
        images: uint8 (N, H, W, 3), values 0-255, memory-mapped read-only.
        pids: int64 (N,) dataset identity numbers.
        cams: int64 (N,) camera numbers.
        is_ir: bool (N,) True for infrared images.
        fingerprint: :func:`split_fingerprint` of the split.
    """

    images: np.ndarray
    pids: np.ndarray
    cams: np.ndarray
    is_ir: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.pids)


def load_split(
    samples: list[Sample],
    size: tuple[int, int],
    *,
    cache_dir: Path | None = None,
    tag: str = "split",
    threads: int = 4,
) -> ArraySplit:
    """Decode ``samples`` into the array cache (once) and return it memory-mapped.

    Args:
        samples: the split's samples, in the order the arrays should have.
        size: (H, W) in pixels.
        cache_dir: cache folder (default :func:`default_cache_dir`).
        tag: short name in the cache file name (e.g. ``"sysu-train"``).
        threads: decoding threads (PIL releases the GIL while decoding and resizing).

    Returns:
        The :class:`ArraySplit`.

    Raises:
        UserError: empty split, missing or corrupt image (named).
    """
    if not samples:
        raise UserError(f"the {tag} split has no images; check the dataset's id lists")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = split_fingerprint(samples, size)
    pids, cams, is_ir = split_arrays(samples)
    path = cache_dir / f"{tag}-{size[0]}x{size[1]}-{fingerprint[:16]}.npy"
    if not path.exists():
        _decode_to(path, samples, size, threads, tag)
    images = np.load(path, mmap_mode="r")
    if images.shape != (len(samples), size[0], size[1], 3) or images.dtype != np.uint8:
        raise UserError(f"array cache {path} has shape {images.shape}, not ({len(samples)}, {size[0]}, {size[1]}, 3); delete it to rebuild")
    return ArraySplit(images, pids, cams, is_ir, fingerprint)


def _decode_to(path: Path, samples: list[Sample], size: tuple[int, int], threads: int, tag: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), size[0], size[1], 3))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise (unwritable_error(path, exc) or exc) from None
    try:
        with progress_bar(len(samples), f"decoding {tag}", unit="img") as advance, ThreadPoolExecutor(max(1, threads)) as pool:
            for i, image in enumerate(pool.map(lambda s: read_image(s.path, size), samples)):
                out[i] = image
                advance()
        out.flush()
        del out
        os.replace(tmp, path)
    except OSError as exc:
        del out
        tmp.unlink(missing_ok=True)
        raise (unwritable_error(path, exc) or exc) from None
    except BaseException:
        del out
        tmp.unlink(missing_ok=True)
        raise
