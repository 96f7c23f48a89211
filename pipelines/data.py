"""From ``--dataset/--data-root`` to decoded splits (and the demo dataset on demand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.data.array_cache import ArraySplit, load_split
from common.config import Config
from common.datasets import REID_DATASETS, DatasetIndex, load_dataset
from common.errors import UserError
from common.runlog import info

def default_demo_root() -> Path:
    """``data/demo-v<generator version>``: a demo made by an older generator is never read as the default."""
    from common.demo.writing import GENERATOR_VERSION

    return Path("data") / f"demo-v{GENERATOR_VERSION}"


@dataclass(frozen=True)
class Splits:
    """A dataset's index and its decoded training and test splits."""

    index: DatasetIndex
    train: ArraySplit
    test: ArraySplit | None


def ensure_demo(cfg: Config, root: Path | None) -> Path:
    """The demo dataset folder, generated (deterministically, from ``data.demo_seed``) if absent.

    An existing folder is read as it is (any demo, whatever its sizes and seed; the reader
    checks the layout; one made by an older generator is read with a note saying so); a
    missing one is generated with the config's demo settings. The default folder is
    :func:`default_demo_root`.
    """
    from common.demo.writing import GENERATOR_VERSION, make_demo, read_demo_info

    root = Path(root) if root is not None else default_demo_root()
    made = read_demo_info(root) if root.exists() else None
    if made is not None:
        if made.get("generator_version") != GENERATOR_VERSION:
            info(f"data: {root} holds a demo of generator version {made.get('generator_version')}, not {GENERATOR_VERSION} "
                 "(near-infrared physics); read as it is: delete it or pass another --data-root for the current one")
        return root
    params = dict(n_train=cfg.data.demo_train_ids, n_val=cfg.data.demo_val_ids, n_test=cfg.data.demo_test_ids,
                  physics=cfg.data.demo_physics)
    info(f"data: generating the demo dataset into {root} (seed {cfg.data.demo_seed}, {cfg.data.demo_physics} infrared)")
    return make_demo(root, cfg.data.demo_seed, **params)


def resolve_root(cfg: Config, dataset: str, data_root: Path | None) -> Path:
    """The data root to read: the given one, or for ``demo`` the (generated) default."""
    if dataset == "demo":
        return ensure_demo(cfg, data_root)
    if data_root is None:
        raise UserError(f"--data-root is required for --dataset {dataset}: pass the folder of your {dataset} copy")
    return Path(data_root)


def load_splits(cfg: Config, dataset: str, data_root: Path | None, *, cache_dir: Path | None = None,
                with_test: bool = True, size: tuple[int, int] | None = None, trial: int = 1) -> Splits:
    """Read a dataset and decode its splits into the array cache at the run's image size.

    Args:
        trial: RegDB split (1..10); ignored by the other datasets.

    Raises:
        UserError: layout problems, missing or corrupt images.
    """
    root = resolve_root(cfg, dataset, data_root)
    index = load_dataset(dataset, root, trial=trial)
    size = size or (cfg.data.height, cfg.data.width)
    threads = cfg.data.decode_threads
    tag = f"{dataset}-t{trial}" if dataset == "regdb" else dataset
    train = load_split(index.train, size, cache_dir=cache_dir, tag=f"{tag}-train", threads=threads)
    test = None
    if with_test:
        if dataset not in REID_DATASETS:
            raise UserError(f"--dataset {dataset} has no re-ID test protocol; test on one of: {', '.join(REID_DATASETS)}")
        test = load_split(index.test, size, cache_dir=cache_dir, tag=f"{tag}-test", threads=threads)
    return Splits(index, train, test)
