"""THE feature file format: what ``pipeline extract`` writes and ``pipeline search`` reads.

One uncompressed ``.npz`` (NumPy's zip of ``.npy`` members), readable with
``np.load(path)`` and no pickle:

==================  =====================  ==================================================
member              dtype, shape           meaning
==================  =====================  ==================================================
``features``        float32 (N, D)         L2-normalised features, one row per image
``paths``           str (N,)               the image files, absolute, in row order
``checkpoint_sha256``  str ()              SHA-256 of the re-ID checkpoint that made them
``checkpoint``      str ()                 its path when extracting (for messages only)
``method``          str ()                 agw | tsme | mso | mscmnet | glmn
``modality``        str ()                 visible | infrared
``feature``         str ()                 pre | post (BNNeck side)
``flip``            bool ()                averaged with the horizontally flipped image
``image_size``      int64 (2,)             (H, W) the images were resized to
``format``          int64 ()               :data:`FORMAT_VERSION`
==================  =====================  ==================================================

Features of a gallery of millions of images do not fit in memory on every machine:
:func:`write_feature_file` streams them into the zip member block by block as they are
extracted, and :meth:`FeatureFile.chunks` reads them back a block of rows at a time, so
neither ``pipeline extract`` nor ``pipeline search`` holds more than one block.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write
from common.errors import UserError

FORMAT_VERSION = 1
_META_KEYS = ("checkpoint_sha256", "checkpoint", "method", "modality", "feature", "flip", "image_size", "format")


def write_feature_file(path: Path, features: np.ndarray | Iterable[np.ndarray], paths: list[str], meta: dict[str, Any]) -> Path:
    """Write a feature file atomically (temporary file, fsync, rename).

    ``features`` may come as blocks (e.g. batch by batch from the extractor): they are
    streamed into the file, so a gallery of millions of images never needs its features in
    memory at once.

    Args:
        path: the ``.npz`` to write (written as named: no ``.npz`` is appended).
        features: float32 (N, D), or an iterable of float32 (n_i, D) blocks with sum n_i = N;
            rows L2-normalised.
        paths: N image paths, in row order.
        meta: ``checkpoint_sha256``, ``checkpoint``, ``method``, ``modality``, ``feature``,
            ``flip``, ``image_size`` (H, W); and ``dim`` (D) when ``features`` are blocks.

    Returns:
        ``path``.

    Raises:
        ValueError: a block not float32 (n, D), a row count other than N, or a missing
            ``meta`` key (nothing is left at ``path``). UserError: the file cannot be written
            (disk full, permissions).
    """
    missing = [k for k in _META_KEYS if k != "format" and k not in meta]
    if missing:
        raise ValueError(f"feature file metadata lacks {missing}")
    if isinstance(features, np.ndarray):
        if features.ndim != 2:
            raise ValueError(f"features must be float32 (N, D), got {features.dtype} {features.shape}")
        dim, blocks = int(features.shape[1]), [features]
    else:
        if "dim" not in meta:
            raise ValueError("feature blocks need meta['dim'], the feature width D")
        dim, blocks = int(meta["dim"]), features
    count = len(paths)
    arrays = {
        "paths": np.asarray([str(p) for p in paths], dtype=np.str_).reshape(count),
        **{k: np.asarray(str(meta[k])) for k in ("checkpoint_sha256", "checkpoint", "method", "modality", "feature")},
        "flip": np.asarray(bool(meta["flip"])),
        "image_size": np.asarray(meta["image_size"], dtype=np.int64).reshape(2),
        "format": np.asarray(FORMAT_VERSION, dtype=np.int64),
    }

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("features.npy", "w", force_zip64=True) as member:
                header = {"descr": "<f4", "fortran_order": False, "shape": (count, dim)}
                np.lib.format.write_array_header_1_0(member, header)
                rows = 0
                for block in blocks:
                    block = np.asarray(block)
                    if block.dtype != np.float32 or block.ndim != 2 or block.shape[1] != dim:
                        raise ValueError(f"feature blocks must be float32 (n, {dim}), got {block.dtype} {block.shape}")
                    rows += len(block)
                    if rows > count:
                        break
                    member.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
                if rows != count:
                    raise ValueError(f"{rows} feature rows for {count} paths")
            for name, value in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, value, allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())

    atomic_write(Path(path), write)
    return Path(path)


@dataclass(frozen=True)
class FeatureFile:
    """An opened feature file: metadata in memory, features and paths read from disk on demand.

    Attributes:
        path: the file.
        meta: ``checkpoint_sha256``, ``checkpoint``, ``method``, ``modality``, ``feature``
            (str), ``flip`` (bool), ``image_size`` (tuple (H, W)), ``format`` (int).
        count: N; dim: D.
    """

    path: Path
    meta: dict[str, Any]
    count: int
    dim: int

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, float32 (n, D) block)`` over all rows, ``rows`` at a time.

        Memory: one block (``rows * D * 4`` bytes) at a time, whatever N is.

        Raises:
            ValueError: ``rows < 1``. UserError: the file ends early (truncated).
        """
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        row_bytes = self.dim * 4
        with zipfile.ZipFile(self.path) as archive, archive.open("features.npy") as member:
            _read_header(member)
            for start in range(0, self.count, rows):
                n = min(rows, self.count - start)
                data = member.read(n * row_bytes)
                if len(data) != n * row_bytes:
                    raise UserError(f"feature file {self.path} is truncated; extract it again with pipeline extract")
                yield start, np.frombuffer(data, dtype="<f4").reshape(n, self.dim)

    def features(self) -> np.ndarray:
        """All features, float32 (N, D), in memory."""
        out = np.empty((self.count, self.dim), dtype=np.float32)
        for start, block in self.chunks(65536):
            out[start : start + len(block)] = block
        return out

    def paths(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Image paths of ``rows`` (int (M,), any order, repeats allowed), or all N when None.

        A search needs the paths of its top-k rows only: they are picked out of the stored
        fixed-width array in one forward pass, without loading the other N - M.

        Returns:
            str (M,) (or (N,)) array, in the order of ``rows``.

        Raises:
            IndexError: a row outside 0 .. N - 1.
        """
        with zipfile.ZipFile(self.path) as archive, archive.open("paths.npy") as member:
            _, dtype = _read_header(member)
            if rows is None:
                return np.frombuffer(member.read(self.count * dtype.itemsize), dtype=dtype).copy()
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if rows.size and (rows.min() < 0 or rows.max() >= self.count):
                raise IndexError(f"rows must be in 0 .. {self.count - 1}")
            wanted = np.unique(rows)
            found = np.empty(len(wanted), dtype=dtype)
            position = 0
            for i, row in enumerate(wanted):
                _skip(member, (int(row) - position) * dtype.itemsize)
                found[i] = np.frombuffer(member.read(dtype.itemsize), dtype=dtype)[0]
                position = int(row) + 1
            return found[np.searchsorted(wanted, rows)]


def _read_header(member) -> tuple[tuple[int, ...], np.dtype]:
    """Read a ``.npy`` header from an open member: (shape, dtype); C order is required.

    Raises:
        ValueError: a Fortran-order array or a header NumPy cannot read.
    """
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(member)
    if fortran:
        raise ValueError("Fortran-order array")
    return shape, dtype


def _skip(member, nbytes: int, block: int = 1 << 24) -> None:
    """Read and drop ``nbytes`` of a zip member (its stream only moves forward), 16 MiB at a time."""
    while nbytes > 0:
        data = member.read(min(nbytes, block))
        if not data:
            raise ValueError("unexpected end of the zip member")
        nbytes -= len(data)


def open_feature_file(path: Path) -> FeatureFile:
    """Open a feature file written by :func:`write_feature_file` (``pipeline extract``).

    Reads the metadata and checks the shapes; features and paths stay on disk
    (:meth:`FeatureFile.chunks`, :meth:`FeatureFile.paths`).

    Raises:
        UserError: missing file, not a zip / ``.npz``, members missing, features not
            float32 (N, D) little-endian C-order, paths not (N,) strings, or a newer format.
    """
    path = Path(path)
    fix = "make it with pipeline extract --checkpoint CK --images DIR --modality M --out F.npz"
    if not path.is_file():
        raise UserError(f"feature file {path} does not exist; {fix}")
    try:
        with np.load(path, allow_pickle=False) as data:  # members load on access: only the small ones here
            names = set(data.files)
            needed = {"features", "paths", *_META_KEYS}
            if not needed <= names:
                raise UserError(f"{path} is not a feature file of pipeline extract (it lacks {sorted(needed - names)}); {fix}")
            meta = {k: data[k].item() for k in ("checkpoint_sha256", "checkpoint", "method", "modality", "feature")}
            meta["flip"] = bool(data["flip"])
            meta["image_size"] = tuple(int(v) for v in data["image_size"])
            meta["format"] = int(data["format"])
        with zipfile.ZipFile(path) as archive:
            with archive.open("features.npy") as member:
                shape, dtype = _read_header(member)
            with archive.open("paths.npy") as member:
                paths_shape, paths_dtype = _read_header(member)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path} cannot be read as a feature file ({str(exc).splitlines()[0][:100]}); {fix}") from None
    if meta["format"] > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer version of this pipeline; upgrade the package")
    if dtype != np.dtype("<f4") or len(shape) != 2 or paths_dtype.kind != "U" or paths_shape != (shape[0],):
        raise UserError(f"{path} holds features {dtype} {shape} and paths {paths_dtype} {paths_shape}, not float32 (N, D) "
                        f"and N strings; {fix}")
    return FeatureFile(path, meta, int(shape[0]), int(shape[1]))
