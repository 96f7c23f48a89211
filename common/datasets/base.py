"""The common currency of every dataset reader: a list of :class:`Sample` per split.

Readers (``sysu``, ``demo``, ...) turn a dataset's on-disk layout into a
:class:`DatasetIndex`; everything downstream (array cache, samplers, protocols) works on
that and never looks at the layout again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
