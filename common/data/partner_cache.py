"""THE partner cache format: every training image's generated partner, in uint8 shards.

Stage 1 writes it (``pipeline generate-pairs``), stage 2 reads it (``pipeline
train-fusion --pairs``); the format lives only here. Layout of a cache folder::

    manifest.json          written last: the cache is complete when it exists
    manifest.partial.json  while generating: inputs + the shards finished so far
    shard_00000.npy ...    uint8 (n, H, W, 3): partner of training image start .. start+n-1

Partner of a visible image = its generated infrared image; of an infrared image = its
generated visible-gray image. The manifest records the generator checkpoint's SHA-256,
the dataset fingerprint (file list, sizes, mtimes; :mod:`common.data.array_cache`), the image
size, the count and a SHA-256 per shard. :func:`open_partner_cache` refuses a cache that is
incomplete, corrupt, or made for another dataset, size or generator, with one line that
names the problem and the command that rebuilds it. There is deliberately no way to
accept a stale cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write, atomic_write_json
from common.checkpoint import file_sha256
from common.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.npy"


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


@dataclass(frozen=True)
class PartnerCacheInputs:
    """What a partner cache is made from; two caches with equal inputs are interchangeable.

    Attributes:
        generator: path of the generator checkpoint (``gan.pt``), as given.
        generator_sha256: SHA-256 of that file.
        dataset: registry name; data_root: dataset folder.
        data_fingerprint: fingerprint of the training split (array cache).
        image_size: (H, W).
        count: number of training images.
    """

    generator: str
    generator_sha256: str
    dataset: str
    data_root: str
    data_fingerprint: str
    image_size: tuple[int, int]
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "image_size": list(self.image_size)}

    def rebuild_command(self, out: Path) -> str:
        return (
            f"pipeline generate-pairs --checkpoint {self.generator} --dataset {self.dataset} "
            f"--data-root {self.data_root} --out {out}"
        )


class PartnerCacheWriter:
    """Writes shards one at a time; resumes a killed run by skipping finished shards.

    Args:
        out: cache folder.
        inputs: the cache's :class:`PartnerCacheInputs`.
        shard_size: images per shard of a new cache (a resumed one keeps its own).

    Raises:
        UserError: if ``out`` holds a complete cache or a partial one of other inputs, or
            is a non-empty folder that is not a partner cache.
    """

    def __init__(self, out: Path, inputs: PartnerCacheInputs, shard_size: int = 1024) -> None:
        self.out = Path(out)
        self.inputs = inputs
        self.shard_size = shard_size
        self.shards: dict[int, dict[str, Any]] = {}
        partial = self.out / PARTIAL
        if (self.out / MANIFEST).exists():
            raise UserError(f"{self.out} already holds a complete partner cache; delete it or choose another --out")
        if partial.exists():
            state = json.loads(partial.read_text())
            if state.get("inputs") != inputs.as_dict():
                raise UserError(
                    f"{self.out} holds an unfinished partner cache of another generator, dataset or size; delete it or choose another --out"
                )
            self.shard_size = state["shard_size"]  # a resumed cache keeps its shard layout
            for entry in state["shards"]:
                path = self.out / entry["file"]
                if path.exists() and file_sha256(path) == entry["file_sha256"]:
                    self.shards[entry["index"]] = entry
        elif self.out.exists() and any(self.out.iterdir()):
            raise UserError(f"{self.out} is a non-empty folder that is not a partner cache; choose an empty or new --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_partial()

    @property
    def num_shards(self) -> int:
        return (self.inputs.count + self.shard_size - 1) // self.shard_size

    def shard_range(self, index: int) -> tuple[int, int]:
        """(start, stop) training-image indices covered by shard ``index``."""
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.inputs.count)

    def done(self, index: int) -> bool:
        return index in self.shards

    def write_shard(self, index: int, partners: np.ndarray) -> None:
        """Atomically store shard ``index``: uint8 (n, H, W, 3) partners of its range."""
        start, stop = self.shard_range(index)
        h, w = self.inputs.image_size
        if partners.dtype != np.uint8 or partners.shape != (stop - start, h, w, 3):
            raise ValueError(f"shard {index} needs uint8 {(stop - start, h, w, 3)}, got {partners.dtype} {partners.shape}")
        path = self.out / shard_name(index)
        atomic_write(path, lambda fh: np.save(fh, partners, allow_pickle=False))
        self.shards[index] = {
            "index": index, "file": path.name, "start": start, "count": stop - start,
            "sha256": _array_sha256(partners), "file_sha256": file_sha256(path),
        }
        self._write_partial()

    def finish(self) -> Path:
        """Write ``manifest.json`` (the completeness mark) and drop the partial manifest.

        Raises:
            ValueError: if a shard is missing.
        """
        missing = [i for i in range(self.num_shards) if i not in self.shards]
        if missing:
            raise ValueError(f"cannot finish the partner cache: shards {missing[:5]} missing")
        manifest = {
            "format": FORMAT_VERSION, **self.inputs.as_dict(), "shard_size": self.shard_size,
            "shards": [self.shards[i] for i in range(self.num_shards)],
        }
        atomic_write_json(self.out / MANIFEST, manifest)
        (self.out / PARTIAL).unlink(missing_ok=True)
        return self.out / MANIFEST

    def _write_partial(self) -> None:
        atomic_write_json(self.out / PARTIAL, {
            "format": FORMAT_VERSION, "inputs": self.inputs.as_dict(), "shard_size": self.shard_size,
            "shards": [self.shards[i] for i in sorted(self.shards)],
        })


class PartnerCache:
    """A complete, verified partner cache, read by training-image index.

    ``cache[indices]`` -> uint8 (len(indices), H, W, 3); ``manifest`` holds the manifest.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], shards: list[np.ndarray]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.shards = shards
        self.shard_size = manifest["shard_size"]

    def __len__(self) -> int:
        return self.manifest["count"]

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        h, w = self.manifest["image_size"]
        out = np.empty((len(indices), h, w, 3), dtype=np.uint8)
        shard_of, offset = np.divmod(indices, self.shard_size)
        for s in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == s)
            out[rows] = self.shards[s][offset[rows]]
        return out


def open_partner_cache(
    folder: Path,
    *,
    dataset: str,
    data_fingerprint: str,
    image_size: tuple[int, int],
    count: int,
    generator_sha256: str | None = None,
    verify: bool = True,
) -> PartnerCache:
    """Open a partner cache for a training split, refusing anything stale or broken.

    Args:
        folder: the cache folder.
        dataset, data_fingerprint, image_size, count: what the training split is now.
        generator_sha256: SHA-256 of the generator the caller expects, if it knows one;
            else, if the generator file recorded in the manifest still exists, its current
            SHA-256 must match the recorded one (a re-trained GAN makes the cache stale).
        verify: check every shard's SHA-256 (reads the whole cache once).

    Raises:
        UserError: missing/incomplete/corrupt cache, or one made for another dataset,
            image size or generator; the message names the rebuild command.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        if (folder / PARTIAL).exists():
            state = json.loads((folder / PARTIAL).read_text())
            inputs = PartnerCacheInputs(**{**state["inputs"], "image_size": tuple(state["inputs"]["image_size"])})
            raise UserError(f"partner cache {folder} is incomplete (generation was interrupted); resume it with: {inputs.rebuild_command(folder)}")
        raise UserError(f"{folder} is not a partner cache (no {MANIFEST}); create one with: pipeline generate-pairs --checkpoint GAN.pt --dataset {dataset} --data-root DIR --out {folder}")
    try:
        manifest = json.loads(manifest_path.read_text())
        inputs = PartnerCacheInputs(**{k: manifest[k] for k in PartnerCacheInputs.__dataclass_fields__} | {"image_size": tuple(manifest["image_size"])})
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{manifest_path} is corrupt; delete {folder} and rebuild it with pipeline generate-pairs") from None
    rebuild = inputs.rebuild_command(folder)
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(f"partner cache {folder} has format {manifest.get('format')}, this version reads {FORMAT_VERSION}; rebuild it with: {rebuild}")
    if inputs.dataset != dataset or inputs.data_fingerprint != data_fingerprint or inputs.count != count:
        raise UserError(f"partner cache {folder} was made for another dataset or a changed copy of it; rebuild it with: {rebuild}")
    if tuple(inputs.image_size) != tuple(image_size):
        raise UserError(
            f"partner cache {folder} holds {inputs.image_size[0]}x{inputs.image_size[1]} images but this run uses "
            f"{image_size[0]}x{image_size[1]}; rebuild it with: {rebuild}"
        )
    if generator_sha256 is not None and inputs.generator_sha256 != generator_sha256:
        raise UserError(f"partner cache {folder} was made with another generator than the one given; rebuild it with: {rebuild}")
    if generator_sha256 is None and Path(inputs.generator).is_file() and file_sha256(Path(inputs.generator)) != inputs.generator_sha256:
        raise UserError(f"partner cache {folder} is stale: its generator {inputs.generator} has changed since; rebuild it with: {rebuild}")
    shards = []
    expected_start = 0
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.exists():
            raise UserError(f"partner cache shard {path} is missing; rebuild the cache with: {rebuild}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError):
            raise UserError(f"partner cache shard {path} is corrupt; rebuild the cache with: {rebuild}") from None
        if array.dtype != np.uint8 or array.shape != (entry["count"], *inputs.image_size, 3) or entry["start"] != expected_start:
            raise UserError(f"partner cache shard {path} has the wrong shape; rebuild the cache with: {rebuild}")
        if verify and _array_sha256(array) != entry["sha256"]:
            raise UserError(f"partner cache shard {path} is corrupt (checksum mismatch); rebuild the cache with: {rebuild}")
        shards.append(array)
        expected_start += entry["count"]
    if expected_start != inputs.count:
        raise UserError(f"partner cache {folder} covers {expected_start} of {inputs.count} images; rebuild it with: {rebuild}")
    return PartnerCache(folder, manifest, shards)
