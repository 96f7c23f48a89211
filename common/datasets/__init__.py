"""Dataset registry: ``--dataset NAME --data-root DIR`` -> :class:`DatasetIndex`.

| name  | layout read                                   | module                       |
|-------|-----------------------------------------------|------------------------------|
| sysu  | SYSU-MM01 as shipped (cam1..cam6, exp/)        | :mod:`common.datasets.sysu`  |
| regdb | RegDB with AGW's idx/ lists (Visible/, Thermal/) | :mod:`common.datasets.regdb` |
| llcm  | LLCM as shipped (idx/, test_vis/, test_nir/)  | :mod:`common.datasets.llcm`  |
| demo  | the generated demo dataset, SYSU-MM01 layout  | :mod:`common.datasets.demo`  |
| pairs | aligned visible/ + infrared/ folders          | :mod:`common.datasets.pairs` |

Each module declares a :class:`DatasetSpec` (``SPEC``: reader, protocol family, number of
splits, whether it is aligned, where it lives by default); :data:`DATASETS` lists them and
everything else asks the spec instead of comparing names.
"""

from __future__ import annotations

from pathlib import Path

from common.datasets import demo, llcm, pairs, regdb, sysu
from common.datasets.base import IR, VIS, DatasetIndex, DatasetSpec, Sample
from common.errors import registered

#: The registry: ``--dataset`` name -> its spec.
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (sysu.SPEC, regdb.SPEC, llcm.SPEC, demo.SPEC, pairs.SPEC)}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``.

    Raises:
        UserError: an unknown name (one line listing the datasets).
    """
    return registered(DATASETS, name, "dataset")


def reid_datasets() -> list[str]:
    """Names of the datasets with a re-ID test protocol."""
    return [name for name, spec in DATASETS.items() if spec.has_test]


def load_dataset(name: str, root: Path, *, split: int = 1) -> DatasetIndex:
    """Read the dataset ``name`` from ``root`` in its original layout.

    Args:
        name: one of :data:`DATASETS`.
        root: the dataset's root folder.
        split: which published train/test split (RegDB 1..10); datasets with one split take 1.

    Raises:
        UserError: unknown name or split, or a layout problem reported by the reader.
    """
    spec = dataset_spec(name)
    return spec.read(Path(root), spec.check_split(split))


__all__ = ["DATASETS", "IR", "VIS", "DatasetIndex", "DatasetSpec", "Sample", "dataset_spec", "load_dataset", "reid_datasets"]
