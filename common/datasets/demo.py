"""The demo dataset as a dataset: SYSU-MM01's layout and protocol, generated when missing.

The images are drawn by :mod:`common.demo` (identities, scenes, rendering, writing) and
written in exactly SYSU-MM01's layout, so the SYSU-MM01 reader (:func:`read_sysu`) reads
them; the test protocol is SYSU-MM01's. Without ``--data-root`` the demo is read from
:func:`default_demo_root` and generated there first when absent (:func:`ensure_demo`,
deterministic from ``data.demo_seed``).
"""

from __future__ import annotations

from pathlib import Path

from common.datasets.base import DatasetSpec
from common.datasets.sysu import read_sysu
from common.errors import UserError
from common.evaluation.protocols import Family
from common.runlog import info

NAME = "demo"


def default_demo_root() -> Path:
    """``data/demo-v<generator version>``: a demo made by an older generator is never read as the default."""
    from common.demo.writing import GENERATOR_VERSION

    return Path("data") / f"demo-v{GENERATOR_VERSION}"


def ensure_demo(cfg, root: Path | None = None) -> Path:
    """The demo dataset folder, generated (deterministically, from ``data.demo_seed``) if absent.

    An existing folder is read as it is (any demo, whatever its sizes and seed; the reader
    checks the layout; one made by an older generator is read with a note saying so); a
    missing one is generated with the config's demo settings (``cfg.data.demo_*``). The
    default folder is :func:`default_demo_root`.

    Raises:
        UserError: ``root`` exists and is not a demo the generator can reuse.
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


def aligned_twins(root: Path, samples) -> list[tuple[Path, Path]]:
    """(visible image, its aligned infrared twin) for every visible sample of a demo split:
    stage 1's ground truth (``pipeline eval-gan --dataset demo``).

    Raises:
        UserError: a demo without aligned twins (made before generator version 3), or a
            missing twin (named).
    """
    from common.demo.writing import aligned_path, read_demo_info

    made = read_demo_info(root) or {}
    physics = made.get("physics")
    if physics is None:
        raise UserError(f"{root} is a demo of generator version {made.get('generator_version')}, which wrote no aligned infrared twins; "
                        "make a current one with pipeline make-demo (or delete it: run-all regenerates it)")
    pairs = [(Path(s.path), aligned_path(root, s.path, physics)) for s in samples if s.modality == "vis"]
    missing = [twin for _, twin in pairs if not twin.is_file()]
    if missing:
        raise UserError(f"{missing[0]} is missing ({len(missing)} aligned twins in all); regenerate the demo with pipeline make-demo")
    return pairs


SPEC = DatasetSpec(
    name=NAME,
    title="demo (SYSU-MM01 protocol)",
    read=lambda root, split: read_sysu(root, name=NAME),
    protocol=Family.SYSU_MM01,
    default_root=ensure_demo,
    aligned_twins=aligned_twins,
)
