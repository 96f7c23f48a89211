"""Dataset registry: ``--dataset NAME --data-root DIR`` -> :class:`DatasetIndex`.

| name  | layout read                                   | module                       |
|-------|-----------------------------------------------|------------------------------|
| sysu  | SYSU-MM01 as shipped (cam1..cam6, exp/)        | :mod:`common.datasets.sysu`  |
| regdb | RegDB with AGW's idx/ lists (Visible/, Thermal/) | :mod:`common.datasets.regdb` |
| llcm  | LLCM as shipped (idx/, test_vis/, test_nir/)  | :mod:`common.datasets.llcm`  |
| demo  | the generated demo dataset, SYSU-MM01 layout  | :mod:`common.datasets.sysu`  |
| pairs | aligned visible/ + infrared/ folders          | :mod:`common.datasets.pairs` |
"""

from __future__ import annotations

from pathlib import Path

from common.datasets.base import IR, VIS, DatasetIndex, Sample
from common.errors import UserError

DATASETS = ("sysu", "regdb", "llcm", "demo", "pairs")
REID_DATASETS = ("sysu", "regdb", "llcm", "demo")


def load_dataset(name: str, root: Path, *, trial: int = 1) -> DatasetIndex:
    """Read the dataset ``name`` from ``root`` in its original layout.

    Args:
        name: one of :data:`DATASETS`.
        root: the dataset's root folder.
        trial: RegDB split, 1..10; ignored by the other datasets.

    Raises:
        UserError: unknown name, or a layout problem reported by the reader.
    """
    if name in ("sysu", "demo"):
        from common.datasets.sysu import read_sysu

        return read_sysu(Path(root), name=name)
    if name == "regdb":
        from common.datasets.regdb import read_regdb

        return read_regdb(Path(root), trial=trial)
    if name == "llcm":
        from common.datasets.llcm import read_llcm

        return read_llcm(Path(root))
    if name == "pairs":
        from common.datasets.pairs import read_pairs

        return read_pairs(Path(root))
    raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "REID_DATASETS", "IR", "VIS", "DatasetIndex", "Sample", "load_dataset"]
