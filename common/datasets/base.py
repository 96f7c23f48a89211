"""The common currency of every dataset reader: a list of :class:`Sample` per split.

Readers (``sysu``, ``demo``, ...) turn a dataset's on-disk layout into a
:class:`DatasetIndex`; everything downstream (array cache, samplers, protocols) works on
that and never looks at the layout again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
