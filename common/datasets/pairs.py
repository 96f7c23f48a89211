"""An aligned visible/infrared folder pair, e.g. RoadScene (Xu et al., FusionDN, AAAI 2020).

Layout::

    ROOT/visible/<name>.jpg
    ROOT/infrared/<name>.jpg     (same file names: pixel-aligned pairs)

Stage 1 trains on the training pairs *unpaired* (the GAN never sees which infrared image
belongs to which visible one); ``eval-gan`` scores the held-out pairs, whose alignment
lets us measure how close a translated image is to the real one.

Split: the pairs sorted by name are shuffled with ``numpy.random.default_rng(0)``; the
last ``round(0.18 * N)`` are held out (RoadScene: 221 pairs -> 181 training, 40 held-out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.datasets.base import IR, VIS, DatasetIndex, DatasetSpec, Sample
from common.errors import UserError

HELD_OUT_FRACTION = 0.18
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _names(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES}


def aligned_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """All (name, visible path, infrared path) pairs, sorted by name.

    Raises:
        UserError: missing folders, no pairs, or files without a partner (named).
    """
    root = Path(root).resolve()
    vis_dir, ir_dir = root / "visible", root / "infrared"
    for folder in (vis_dir, ir_dir):
        if not folder.is_dir():
            raise UserError(f"{folder} is missing; an aligned pairs folder holds visible/ and infrared/ with matching file names")
    vis, ir = _names(vis_dir), _names(ir_dir)
    unmatched = sorted(set(vis) ^ set(ir))
    if unmatched:
        raise UserError(
            f"{root}: '{unmatched[0]}' has no partner in the other folder ({len(unmatched)} unmatched); "
            "visible/ and infrared/ must hold the same file names"
        )
    if not vis:
        raise UserError(f"{root}: visible/ and infrared/ hold no images (.jpg, .png)")
    return [(name, vis[name], ir[name]) for name in sorted(vis)]


def split_pairs(pairs: list[tuple[str, Path, Path]]) -> tuple[list, list]:
    """Deterministic (training, held-out) split of aligned pairs (see the module docstring)."""
    order = np.random.default_rng(0).permutation(len(pairs))
    n_held = int(round(HELD_OUT_FRACTION * len(pairs))) if len(pairs) > 1 else 0
    cut = len(pairs) - n_held
    return [pairs[i] for i in sorted(order[:cut])], [pairs[i] for i in sorted(order[cut:])]


def _as_samples(pairs: list[tuple[str, Path, Path]]) -> list[Sample]:
    samples = []
    for index, (_, vis_path, ir_path) in enumerate(pairs):
        samples.append(Sample(str(vis_path), index, 1, VIS))
        samples.append(Sample(str(ir_path), index, 2, IR))
    return samples


def read_pairs(root: Path) -> DatasetIndex:
    """Read an aligned folder as a dataset: train = training pairs, test = held-out pairs.

    Samples of pair ``i`` get pid ``i``, camera 1 (visible) or 2 (infrared). ``extra``
    holds ``"train_pairs"`` and ``"test_pairs"`` as (name, visible, infrared) lists.
    """
    pairs = aligned_pairs(root)
    train_pairs, test_pairs = split_pairs(pairs)
    return DatasetIndex(
        "pairs", Path(root), _as_samples(train_pairs), _as_samples(test_pairs), (1,), (2,),
        extra={"train_pairs": train_pairs, "test_pairs": test_pairs},
    )


SPEC = DatasetSpec(
    name="pairs",
    title="aligned pairs",
    read=lambda root, split: read_pairs(root),
    aligned=True,
)
