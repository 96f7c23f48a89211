"""Writing the demo dataset to disk in SYSU-MM01's layout (:func:`make_demo`) and reading its record.

The folder is rendered into a temporary sibling and renamed once complete; ``demo_info.json``
(generator version, arguments, image count) is written last, and :func:`is_complete_demo`
reads it to decide whether a folder can be reused.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import os
from pathlib import Path
import shutil

import numpy as np
from PIL import Image

from common.demo.identities import (_S_ALIGNED, _S_IDS, _S_IMAGE, INFRARED_CAMS, MAX_PID, PHYSICS, VISIBLE_CAMS, Identity, _camera_presence,
                                     _rng, identity_attributes)
from common.demo.rendering import render_infrared, render_visible
from common.demo.scenes import camera_attributes
from common.errors import UserError

GENERATOR_VERSION: int = 3
"""Bump when the rendering changes: a folder made by another version is not reused."""
ALIGNED_DIRS: dict[str, str] = {"nir": "aligned_nir", "thermal": "aligned_thermal"}
JPEG_QUALITY = 90
INFO_FILE = "demo_info.json"
_PARAM_DEFAULTS: dict[str, object] = {"n_train": 32, "n_val": 8, "n_test": 32, "image_size": (128, 64), "physics": "nir"}


# --------------------------------------------------------------------------- writing


def _split_ids(seed: int, n_train: int, n_val: int, n_test: int) -> tuple[list[int], list[int], list[int]]:
    """Distinct ids from 1..533 for the three splits, each sorted.

    The ids are a prefix of one seeded permutation, so a larger dataset contains the ids of a
    smaller one made with the same seed.
    """
    ids = _rng(seed, _S_IDS).permutation(np.arange(1, MAX_PID + 1))[: n_train + n_val + n_test]
    parts = np.split(ids, [n_train, n_train + n_val])
    return tuple(sorted(int(i) for i in p) for p in parts)  # type: ignore[return-value]


def _params(n_train: int, n_val: int, n_test: int, image_size: tuple[int, int], physics: str) -> dict[str, object]:
    return {"n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": [int(image_size[0]), int(image_size[1])],
            "physics": physics}


def _validate(seed: int, n_train: int, n_val: int, n_test: int, image_size: tuple[int, int], physics: str) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if min(n_train, n_val, n_test) < 1:  # SYSU-MM01 readers reject an empty id list
        raise ValueError(f"need at least one id per split, got {n_train}, {n_val}, {n_test}")
    if n_train + n_val + n_test > MAX_PID:
        raise ValueError(f"at most {MAX_PID} identities in all, got {n_train + n_val + n_test}")
    if len(image_size) != 2 or image_size[0] < 32 or image_size[1] < 16:
        raise ValueError(f"image_size is (H, W) with H >= 32 and W >= 16, got {image_size!r}")
    if physics not in PHYSICS:
        raise ValueError(f"physics must be one of {PHYSICS}, got {physics!r}")


def read_demo_info(root: Path) -> dict | None:
    """``root/demo_info.json`` as a dict, or None when there is none or it is unreadable."""
    try:
        info = json.loads((Path(root) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def aligned_path(root: Path, image: Path, physics: str = "nir") -> Path:
    """The aligned infrared twin of visible image ``root/cam<k>/<pid>/<n>.jpg``:
    ``root/aligned_nir/cam<k>/<pid>/<n>.jpg`` (``aligned_thermal`` for thermal physics)."""
    rel = Path(image).resolve().relative_to(Path(root).resolve())
    return Path(root) / ALIGNED_DIRS[physics] / rel


def is_complete_demo(out: Path, seed: int, **params: object) -> bool:
    """Whether ``out`` holds a finished demo made by this generator version with these arguments.

    Args:
        out: the dataset folder.
        seed: the seed it should have been made with.
        **params: any of ``n_train``, ``n_val``, ``n_test``, ``image_size``, ``physics``
            (defaults as in :func:`make_demo`).

    Returns:
        True when ``out/demo_info.json`` (written last) and the three split files exist and
        the recorded version, seed and parameters match; False otherwise (never raises for a
        missing or unreadable folder).

    Raises:
        TypeError: for an unknown parameter name.
    """
    unknown = set(params) - set(_PARAM_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown demo parameter(s): {sorted(unknown)}")
    merged = {**_PARAM_DEFAULTS, **params}
    expected = {"generator_version": GENERATOR_VERSION, "seed": int(seed), **_params(**merged)}  # type: ignore[arg-type]
    out = Path(out)
    info = read_demo_info(out)
    if info is None or any(info.get(k) != v for k, v in expected.items()):
        return False
    return all((out / "exp" / f"{s}_id.txt").is_file() for s in ("train", "val", "test"))


def _describe(out: Path) -> str:
    """Why ``out`` cannot be reused, for the one-line error."""
    info = read_demo_info(out)
    try:
        keys = ("generator_version", "seed", "n_train", "n_val", "n_test", "image_size", "physics")
        recorded = ", ".join(f"{k}={info.get(k)}" for k in keys)  # type: ignore[union-attr]
        return f"holds a demo made with different arguments ({recorded})"
    except AttributeError:
        return "exists and is not a complete demo dataset" if out.is_dir() else "exists and is not a folder"


def _save(img: np.ndarray, path: Path) -> None:
    """uint8 (H, W, 3) or grey (H, W) -> RGB JPEG (grey as three equal channels, like SYSU-MM01)."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    Image.fromarray(img).save(path, "JPEG", quality=JPEG_QUALITY)


def _render_into(
    root: Path,
    seed: int,
    plan: list[tuple[int, int, int]],
    image_size: tuple[int, int],
    physics: str,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render every (pid, cam, count) of ``plan`` as ``root/camC/PPPP/NNNN.jpg``, and the
    aligned infrared twin of each visible image under ``root/<aligned dir>/``."""
    total, done = sum(n for _, _, n in plan), 0
    cameras = {c: camera_attributes(seed, c, image_size) for c in VISIBLE_CAMS + INFRARED_CAMS}
    idents: dict[int, Identity] = {}
    for pid, cam, count in plan:
        if pid not in idents:
            idents[pid] = identity_attributes(seed, pid)
        ident = idents[pid]
        camera = cameras[cam]
        rel = Path(f"cam{cam}") / f"{pid:04d}"
        (root / rel).mkdir(parents=True)
        if not camera.infrared:
            (root / ALIGNED_DIRS[physics] / rel).mkdir(parents=True)
        for n in range(1, count + 1):
            rng = _rng(seed, _S_IMAGE, pid, cam, n)
            name = f"{n:04d}.jpg"
            if camera.infrared:
                _save(render_infrared(ident, camera, rng, image_size, physics), root / rel / name)
            else:
                visible, aligned = render_visible(ident, camera, rng, image_size, _rng(seed, _S_ALIGNED, pid, cam, n), physics)
                _save(visible, root / rel / name)
                _save(aligned, root / ALIGNED_DIRS[physics] / rel / name)
            done += 1
            if progress is not None:
                progress(done, total)


def make_demo(
    out: Path,
    seed: int = 0,
    *,
    n_train: int = 32,
    n_val: int = 8,
    n_test: int = 32,
    image_size: tuple[int, int] = (128, 64),
    physics: str = "nir",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate the demo dataset in SYSU-MM01's layout (see the module docstring) at ``out``.

    The folder is rendered into ``out.parent/.<name>.tmp-<pid>`` and renamed to ``out`` once
    complete (``demo_info.json`` is written last). If ``out`` already holds a complete demo
    made with the same arguments, nothing is done. An existing empty folder is replaced.

    Args:
        out: the dataset folder to create.
        seed: non-negative int; the same arguments give byte-identical files.
        n_train, n_val, n_test: identities per split (each >= 1, at most 533 in all), drawn
            without replacement from 1..533. With the defaults: 72 identities, about 2,400
            images.
        image_size: (H, W) of every image in pixels (H >= 32, W >= 16); images are 8-bit RGB
            JPEGs (quality 90); infrared ones have three equal channels.
        physics: infrared cameras' physics, "nir" (near-infrared reflectance under an active
            lamp, SYSU-MM01 / LLCM-like) or "thermal" (heat, RegDB-like).
        progress: called as ``progress(done, total)`` after each image (aligned twins are
            not counted).

    Returns:
        ``out``.

    Raises:
        UserError: ``out`` exists and is not a matching complete demo (another seed, other
            arguments, another generator version, or some other folder or file). Nothing of
            the user's is deleted.
        ValueError: invalid arguments.
    """
    _validate(seed, n_train, n_val, n_test, image_size, physics)
    out = Path(out)
    params = dict(n_train=n_train, n_val=n_val, n_test=n_test, image_size=tuple(image_size), physics=physics)
    if is_complete_demo(out, seed, **params):
        return out
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UserError(f"{out} {_describe(out)}; choose another --out or delete it")

    splits = _split_ids(seed, n_train, n_val, n_test)
    plan = [(pid, cam, n) for pid in sorted(sum(splits, [])) for cam, n in _camera_presence(seed, pid).items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():  # a leftover of an interrupted run of ours with the same process id
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _render_into(tmp, seed, plan, tuple(image_size), physics, progress)
        (tmp / "exp").mkdir()
        for name, ids in zip(("train", "val", "test"), splits):
            (tmp / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids))
        info = {"generator_version": GENERATOR_VERSION, "seed": int(seed), **_params(n_train, n_val, n_test, image_size, physics),
                "images": sum(n for _, _, n in plan), "name": "demo", "layout": "SYSU-MM01", "aligned_dir": ALIGNED_DIRS[physics]}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, out)  # atomic; replaces only an empty folder
        except OSError:
            if is_complete_demo(out, seed, **params):  # another process finished first
                shutil.rmtree(tmp)
                return out
            raise UserError(f"{out} appeared while the demo was being generated; choose another --out or delete it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
