"""The common currency of every dataset reader: a list of :class:`Sample` per split.

Readers (``sysu``, ``demo``, ...) turn a dataset's on-disk layout into a
:class:`DatasetIndex`; everything downstream (array cache, samplers, protocols) works on
that and never looks at the layout again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError

VIS = "vis"
IR = "ir"
MODALITIES = (VIS, IR)


@dataclass(frozen=True)
class Sample:
    """One image of one identity seen by one camera.

    Attributes:
        path: absolute path of the image file.
        pid: the dataset's own identity number (SYSU-MM01: the 4-digit folder name as int).
        cam: the dataset's camera number, 1-based (SYSU-MM01: 1..6).
        modality: ``"vis"`` (visible RGB) or ``"ir"`` (infrared).
    """

    path: str
    pid: int
    cam: int
    modality: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know of one dataset; each dataset file ends with
    ``SPEC = DatasetSpec(...)`` and :data:`common.datasets.DATASETS` lists them. Nothing
    outside a dataset's file compares its name: code asks its spec.

    Attributes:
        name: ``--dataset`` name, recorded in indexes, caches and results.
        title: how results and protocol lines name it ("SYSU-MM01", "demo (SYSU-MM01 protocol)").
        read: ``read(root, split) -> DatasetIndex`` (``split``: which published train/test
            split, 1-based; datasets with one split ignore it).
        protocol: its test protocol family (:class:`common.evaluation.protocols.Family`),
            or None for a dataset without a re-ID test (aligned pairs, scored by ``eval-gan``).
        splits: how many published train/test splits it has; above 1 (RegDB's 10), one
            model is trained per split and results are pooled over the splits' models.
        aligned: its training images come in pixel-aligned visible/infrared pairs (stage 1
            trains on them unpaired; ``eval-gan`` scores the held-out ones).
        default_root: ``default_root(cfg, data_root or None) -> Path``, the folder to read,
            made when missing (the demo generates itself, by default into ``data/demo-v<n>``),
            or None: ``--data-root`` is required.
        aligned_twins: ``aligned_twins(root, samples) -> [(visible image, its infrared twin)]``
            for a dataset that renders every visible image's infrared twin (the demo:
            ground truth for ``eval-gan``), or None.
    """

    name: str
    title: str
    read: Callable[[Path, int], "DatasetIndex"]
    protocol: Any = None
    splits: int = 1
    aligned: bool = False
    default_root: Callable[[Any, Path | None], Path] | None = None
    aligned_twins: Callable[[Path, list], list[tuple[Path, Path]]] | None = None

    @property
    def has_test(self) -> bool:
        """Whether it has a re-ID test protocol."""
        return self.protocol is not None

    def tag(self, split: int) -> str:
        """The name of one split's data in caches and run directories (``regdb-t3``; the
        name alone for a dataset with one split)."""
        return f"{self.name}-t{split}" if self.splits > 1 else self.name

    def check_split(self, split: int) -> int:
        """``split`` as an int in 1..splits.

        Raises:
            UserError: outside that range.
        """
        if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= self.splits:
            if self.splits == 1:
                raise UserError(f"{self.title} has one train/test split; --split {split} does not exist (leave it at 1)")
            raise UserError(f"{self.title} split {split!r} is outside 1..{self.splits}; the published splits are numbered 1 to "
                            f"{self.splits} (--split)")
        return split


@dataclass(frozen=True)
class DatasetIndex:
    """All samples of one dataset copy, split as its standard protocol prescribes.

    Attributes:
        name: registry name (``"sysu"``, ``"demo"``, ...).
        root: the dataset's root folder.
        train: training samples, sorted by (pid, cam, file name).
        test: test samples (the protocol draws query and gallery from them), sorted by
            (pid, cam, file name): protocols rely on this order to reproduce the
            reference code's random gallery draws.
        visible_cams / infrared_cams: the camera numbers of each modality.
    """

    name: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    visible_cams: tuple[int, ...]
    infrared_cams: tuple[int, ...]
    extra: dict = field(default_factory=dict)


def split_arrays(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column arrays of a split: ``(pids, cams, is_ir)``.

    Returns:
        pids: int64 (N,); cams: int64 (N,); is_ir: bool (N,), True for infrared samples.
    """
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    cams = np.fromiter((s.cam for s in samples), dtype=np.int64, count=len(samples))
    is_ir = np.fromiter((s.modality == IR for s in samples), dtype=bool, count=len(samples))
    return pids, cams, is_ir


def read_image_list(
    root: Path,
    path: Path,
    modality: str,
    *,
    parse: Callable[[str], tuple[int, int] | str],
    line_format: str,
    missing_hint: str,
    restore_hint: str,
) -> list[Sample]:
    """Read an index list of ``<image path relative to root> <integer label>`` lines.

    The format of RegDB's ``idx/*_{visible,thermal}_{t}.txt`` and LLCM's
    ``idx/train_{vis,nir}.txt`` (both read by ``line.split(' ')`` in their reference code).
    The label column is checked to be an integer and otherwise ignored: in both datasets it
    is a class index, not the identity (see the readers' module docs).

    Args:
        parse: maps the relative path to ``(pid, cam)``, or to a string saying why it
            cannot (the reason is put into the error).
        line_format / missing_hint / restore_hint: wording of the errors.

    Returns:
        one :class:`Sample` per non-blank line, in file order.

    Raises:
        UserError: missing file, a malformed line (file and line number named), a path
            ``parse`` rejects, a listed image that does not exist, or a list without lines.
    """
    if not path.is_file():
        raise UserError(f"{path} is missing; {missing_hint}")
    samples: list[Sample] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) != 2:
            raise UserError(f"{path} line {number} is malformed: expected {line_format}")
        rel, label = tokens
        try:
            int(label)
        except ValueError:
            raise UserError(
                f"{path} line {number} is malformed: the label '{label}' is not an integer; expected {line_format}"
            ) from None
        parsed = parse(rel)
        if isinstance(parsed, str):
            raise UserError(f"{path} line {number} is malformed: {parsed}; expected {line_format}")
        image = root / rel
        if not image.is_file():
            raise UserError(f"{image} is missing (listed in {path} line {number}); {restore_hint}")
        samples.append(Sample(str(image), parsed[0], parsed[1], modality))
    if not samples:
        raise UserError(f"{path} lists no images; expected lines {line_format}")
    return samples
