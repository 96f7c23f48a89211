"""Dataset registry: ``--dataset NAME --data-root DIR`` -> :class:`DatasetIndex`.

| name  | layout read                                   | module                     |
|-------|-----------------------------------------------|----------------------------|
| sysu  | SYSU-MM01 as shipped (cam1..cam6, exp/)        | :mod:`common.datasets.sysu`  |
| demo  | the generated demo dataset, SYSU-MM01 layout  | :mod:`common.datasets.sysu`  |
| pairs | aligned visible/ + infrared/ folders          | :mod:`common.datasets.pairs` |
"""

from __future__ import annotations

from pathlib import Path

from common.datasets.base import IR, VIS, DatasetIndex, Sample
from common.errors import UserError

DATASETS = ("sysu", "demo", "pairs")
REID_DATASETS = ("sysu", "demo")


def load_dataset(name: str, root: Path) -> DatasetIndex:
    """Read the dataset ``name`` from ``root`` in its original layout.

    Raises:
        UserError: unknown name, or a layout problem reported by the reader.
    """
    if name in ("sysu", "demo"):
        from common.datasets.sysu import read_sysu

        return read_sysu(Path(root), name=name)
    if name == "pairs":
        from common.datasets.pairs import read_pairs

        return read_pairs(Path(root))
    raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "REID_DATASETS", "IR", "VIS", "DatasetIndex", "Sample", "load_dataset"]
