"""From ``--dataset/--data-root`` to decoded splits (and the demo dataset on demand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import Config
from common.data.array_cache import ArraySplit, load_split
from common.datasets import DatasetIndex, DatasetSpec, dataset_spec, load_dataset, reid_datasets
from common.errors import UserError


@dataclass(frozen=True)
class Splits:
    """A dataset's index and its decoded training and test splits.

    Attributes:
        index: what the reader found (:class:`common.datasets.DatasetIndex`).
        train, test: the decoded splits (``test`` None when not asked for).
        split: which published train/test split (RegDB 1..10; 1 elsewhere).
    """

    index: DatasetIndex
    train: ArraySplit
    test: ArraySplit | None
    split: int = 1

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec."""
        return dataset_spec(self.index.name)


def resolve_root(cfg: Config, spec: DatasetSpec, data_root: Path | None) -> Path:
    """The data root to read: the given one, or the dataset's default (the demo generates itself).

    Raises:
        UserError: no ``--data-root`` for a dataset that has no default.
    """
    if spec.default_root is not None:
        return spec.default_root(cfg, data_root)  # the demo: an existing folder is read, a missing one generated
    if data_root is None:
        raise UserError(f"--data-root is required for --dataset {spec.name}: pass the folder of your {spec.title} copy")
    return Path(data_root)


def load_splits(cfg: Config, dataset: str, data_root: Path | None, *, cache_dir: Path | None = None,
                with_test: bool = True, size: tuple[int, int] | None = None, split: int = 1) -> Splits:
    """Read a dataset and decode its splits into the array cache at the run's image size.

    Args:
        split: which published train/test split (RegDB 1..10); datasets with one split take 1.

    Raises:
        UserError: an unknown dataset or split, layout problems, missing or corrupt images,
            a test split asked of a dataset without a re-ID protocol.
    """
    spec = dataset_spec(dataset)
    split = spec.check_split(split)
    if with_test and not spec.has_test:
        raise UserError(f"--dataset {dataset} has no re-ID test protocol; test on one of: {', '.join(reid_datasets())}")
    root = resolve_root(cfg, spec, data_root)
    index = load_dataset(dataset, root, split=split)
    size = size or (cfg.data.height, cfg.data.width)
    threads = cfg.data.decode_threads
    tag = spec.tag(split)
    train = load_split(index.train, size, cache_dir=cache_dir, tag=f"{tag}-train", threads=threads)
    test = load_split(index.test, size, cache_dir=cache_dir, tag=f"{tag}-test", threads=threads) if with_test else None
    return Splits(index, train, test, split)
