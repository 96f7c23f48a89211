"""``check-data``: read a dataset copy, stat every image it lists, and count what the
standard test protocol would use.

The query/gallery rules follow the reference code of each dataset:

* SYSU-MM01 / demo (mode ``all`` | ``indoor``): query = every infrared test image (cameras
  3 and 6) in both modes; gallery pool = the visible test images of cameras 1, 2, 4, 5
  (``all``) or 1, 2 (``indoor``), from which each trial draws one image per (identity,
  camera) (see :mod:`common.evaluation.protocols`; AGW ``data_manager.py`` ``process_query_sysu``,
  ``process_gallery_sysu``).
* RegDB (direction ``v2i`` | ``i2v``, split 1..10): ``v2i`` query = the split's visible test
  images, gallery = all its thermal test images (no sampling); ``i2v`` the reverse (AGW
  ``test.py``, ``--tvsearch``).
* LLCM (direction ``v2i`` | ``i2v``): ``v2i`` query = every visible test image, gallery
  pool = the NIR test images, from which each trial draws one per (identity, camera);
  ``i2v`` the reverse (repo ``ZYK100/LLCM`` ``DEEN/data_manager.py``
  ``process_query_llcm``, ``process_gallery_llcm``).

The summary is one JSON-able dict; :func:`format_check` renders it as a small table.
Images are only stat-ed, never decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.datasets import dataset_spec, load_dataset
from common.datasets.base import IR, VIS, DatasetIndex, Sample
from common.errors import UserError
from common.evaluation.protocols import DIRECTIONS, SYSU_INFRARED_CAMS, SYSU_MODES, Family

POOL_NOTE = "candidate pool before per-trial sampling"
_WORDS = {VIS: "visible", IR: "infrared"}


def _stats(samples: list[Sample]) -> dict:
    return {
        "ids": len({s.pid for s in samples}),
        "images": len(samples),
        "cams": sorted({s.cam for s in samples}),
    }


def _side(samples: list[Sample], modality: str, *, note: str | None = None) -> dict:
    side = _stats(samples)
    side["modality"] = _WORDS[modality]
    if note is not None:
        side["note"] = note
    return side


def _check_files(index: DatasetIndex) -> None:
    for sample in (*index.train, *index.test):
        if not os.path.isfile(sample.path):
            raise UserError(
                f"{sample.path} is missing; the {index.name} copy at {index.root} lists it; restore the file"
            )


def _of(samples: list[Sample], modality: str, cams: tuple[int, ...] | None = None) -> list[Sample]:
    return [s for s in samples if s.modality == modality and (cams is None or s.cam in cams)]


def check_dataset(name: str, root: Path, *, split: int = 1, mode: str = "all", direction: str = "v2i") -> dict:
    """Read ``name`` at ``root``, verify that every listed image exists, and summarise it.

    Args:
        name: a registry name (:data:`common.datasets.DATASETS`).
        root: the dataset folder.
        split: which published train/test split (RegDB 1..10; ignored by the others).
        mode: SYSU-MM01-protocol search mode, ``"all"`` or ``"indoor"``.
        direction: RegDB/LLCM search direction, ``"v2i"`` (visible query) or ``"i2v"``.

    Returns:
        For re-ID datasets ``{"dataset", "root", "train": {"visible": {...},
        "infrared": {...}}, "query": {...}, "gallery": {...}, "protocol": {...}}``, where
        each count block holds ``ids``, ``images`` and ``cams`` (sorted list), query and
        gallery add ``modality`` and a sampled gallery pool adds ``note``; ``protocol`` is
        ``{"mode": mode}`` (SYSU-MM01 protocol), ``{"direction": d, "split": s}`` (a dataset
        of several splits: RegDB) or ``{"direction": d}`` (LLCM). For an aligned dataset:
        ``{"dataset", "root", "train": {"pairs", "images"}, "held_out": {"pairs", "images"}}``.

    Raises:
        UserError: unknown dataset, mode or direction; any layout problem the reader
            reports; the first listed image file that does not exist.
    """
    spec = dataset_spec(name)
    if mode not in SYSU_MODES:
        raise UserError(f"unknown search mode '{mode}'; use one of: {', '.join(SYSU_MODES)}")
    if direction not in DIRECTIONS:
        raise UserError(f"unknown search direction '{direction}'; use v2i (visible query) or i2v (infrared query)")
    index = load_dataset(name, Path(root), split=split)
    _check_files(index)
    summary: dict = {"dataset": name, "root": str(Path(index.root).resolve())}
    if not spec.has_test:  # aligned pairs: training pairs and held-out pairs
        n_train, n_held = len(index.extra["train_pairs"]), len(index.extra["test_pairs"])
        summary["train"] = {"pairs": n_train, "images": 2 * n_train}
        summary["held_out"] = {"pairs": n_held, "images": 2 * n_held}
        return summary
    summary["train"] = {"visible": _stats(_of(index.train, VIS)), "infrared": _stats(_of(index.train, IR))}
    test = index.test
    if spec.protocol is Family.SYSU_MM01:
        summary["query"] = _side(_of(test, IR, SYSU_INFRARED_CAMS), IR)
        summary["gallery"] = _side(_of(test, VIS, SYSU_MODES[mode]), VIS, note=POOL_NOTE)
        summary["protocol"] = {"mode": mode}
        return summary
    q_mod, g_mod = (VIS, IR) if direction == "v2i" else (IR, VIS)
    summary["query"] = _side(_of(test, q_mod), q_mod)
    summary["gallery"] = _side(_of(test, g_mod), g_mod, note=POOL_NOTE if spec.protocol.samples_gallery else None)
    summary["protocol"] = {"direction": direction, **({"split": split} if spec.splits > 1 else {})}
    return summary


def _cams(cams: list[int]) -> str:
    return ",".join(str(c) for c in cams)


def format_check(summary: dict) -> str:
    """A small aligned table of a :func:`check_dataset` summary, one line per split and
    modality (``split  modality  ids  images  cameras``), headed by dataset and root and
    followed by the protocol."""
    lines = [f"{summary['dataset']}  {summary['root']}"]
    if "held_out" in summary:  # aligned pairs
        header, align = ("split", "pairs", "images"), "<>>"
        rows = [(split, str(summary[split]["pairs"]), str(summary[split]["images"])) for split in ("train", "held_out")]
        notes = ["", ""]
    else:
        header, align = ("split", "modality", "ids", "images", "cameras"), "<<>><"
        rows, notes = [], []
        for word in ("visible", "infrared"):
            block = summary["train"][word]
            rows.append(("train", word, str(block["ids"]), str(block["images"]), _cams(block["cams"])))
            notes.append("")
        for split in ("query", "gallery"):
            block = summary[split]
            rows.append((split, block["modality"], str(block["ids"]), str(block["images"]), _cams(block["cams"])))
            notes.append(f"  ({block['note']})" if "note" in block else "")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(w) if a == "<" else cell.rjust(w) for cell, w, a in zip(row, widths, align)]
        return "  ".join(cells).rstrip()

    lines.append(render(header))
    lines.extend(render(row) + note for row, note in zip(rows, notes))
    if "protocol" in summary:
        lines.append("protocol: " + ", ".join(f"{k} {v}" for k, v in summary["protocol"].items()))
    return "\n".join(lines)
