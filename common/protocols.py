"""Query/gallery construction for the SYSU-MM01 test protocol, and its camera-ignore rule.

The test split has 96 identities seen by four visible cameras (1, 2 indoor; 4, 5 outdoor)
and two infrared cameras (3 indoor, 6 outdoor). The protocol, as run by the AGW baseline
(repo ``mangye16/Cross-Modal-Re-ID-baseline``, ``data_manager.py``: ``process_query_sysu``,
``process_gallery_sysu``; ``test.py``) and by the official MATLAB code (repo
``wuancong/SYSU-MM01``, ``evaluation/evaluation_SYSU_MM01.m``):

* **query** = every infrared test image (cameras 3 and 6), in both search modes;
* **gallery** = per trial, one random image (single-shot) or ten (multi-shot) per
  (identity, visible camera): cameras 1, 2, 4, 5 in *all-search*, 1, 2 in *indoor-search*;
* 10 trials, results averaged (``trial = 0..9`` in AGW);
* camera 3 stands in the same room as camera 2 (``cam_id = [1 2 2 4 5 6]`` in the MATLAB
  code, whose same-camera removal therefore drops camera-2 gallery images for camera-3
  probes); AGW's ``eval_sysu`` writes the rule out: for a camera-3 query, every camera-2
  gallery image is removed, whatever its identity.

Gallery draw. AGW visits identities in ascending order and, inside, the cameras in the
order above, skipping (identity, camera) pairs without images, and appends
``random.choice(sorted file list)`` after ``random.seed(trial)``. :func:`sysu_gallery`
reproduces that stream exactly with a private ``random.Random(trial)`` (same generator as
``random.seed(trial)``; the global generator is never touched). Note: in the stored copy of
AGW's root ``data_manager.py`` (commit c667a1af) the ``random.seed(trial)`` line is
commented out, leaving the draw to whatever state the global generator is in; the same
function seeds it in ``mangye16/DDAG`` (``data_manager.py``, 7ecefeb) and in AGW's
``PAMI23_Supervised/data_manager.py`` (e817a26). We reproduce the seeded draw. The
official MATLAB code draws from a fixed permutation file (``rand_perm_cam.mat``), so its
galleries differ from AGW's; only AGW's draw can be reproduced in Python.

Multi-shot. AGW has no multi-shot draw. The ``gall_mode='multi'`` variant of
``process_gallery_sysu`` in the TSME code (repo ``jnLreID/Revisiting-Modality-specific-
Feature-Compensation-for-Visible-Infrared-Person-Re-Identification``, ``data_manager.py``,
99bc54c) and in later repositories derived from it calls
``np.random.choice(new_files, 10, replace=False)``: NumPy's global generator, which is not
seeded per trial there (so the draw is not a function of the trial), and which fails for a
camera with fewer than 10 images. We therefore use, from the same per-trial stream,
``random.sample(sorted files, min(shots, n_files))`` per (identity, camera). The official
multi-shot is likewise 10 images per (identity, camera): the first 10 of a random
permutation (``get_testing_set.m``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from numbers import Integral
from types import MappingProxyType
from typing import Mapping

import numpy as np

__all__ = [
    "SYSU_INDOOR_VISIBLE_CAMS",
    "SYSU_INFRARED_CAMS",
    "SYSU_MODES",
    "SYSU_VISIBLE_CAMS",
    "Trial",
    "sysu_gallery",
    "sysu_ignore_mask",
    "sysu_query",
    "sysu_trials",
]

SYSU_VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
SYSU_INFRARED_CAMS: tuple[int, ...] = (3, 6)
SYSU_INDOOR_VISIBLE_CAMS: tuple[int, ...] = (1, 2)
#: Gallery cameras of each search mode, in AGW's visiting order (read-only).
SYSU_MODES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"all": SYSU_VISIBLE_CAMS, "indoor": SYSU_INDOOR_VISIBLE_CAMS}
)
# The camera-3 queries ignore the camera-2 gallery (same room).
_SYSU_IGNORE_QUERY_CAM = 3
_SYSU_IGNORE_GALLERY_CAM = 2


@dataclass(frozen=True, eq=False)
class Trial:
    """One evaluation trial: which test-split samples are queries and gallery.

    Attributes:
        index: trial number (the random seed of the gallery draw), ``>= 0``.
        query: int64 array ``(Q,)`` of indices into the test split, read-only.
        gallery: int64 array ``(G,)`` of indices into the test split, in draw order,
            read-only.
        ignore: ``(Q, G)`` bool array, ``True`` where a gallery item is removed from that
            query's ranking (pass it to ``evaluate_ranking(..., ignore=...)``), or ``None``.
    """

    index: int
    query: np.ndarray
    gallery: np.ndarray
    ignore: np.ndarray | None

    def __post_init__(self) -> None:
        for name in ("query", "gallery", "ignore"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value)
                if value.flags.writeable:
                    value = value.view()
                    value.flags.writeable = False
                object.__setattr__(self, name, value)


def sysu_query(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """Indices of the SYSU-MM01 queries: every infrared image (cameras 3 and 6).

    The same in all-search and indoor-search (AGW's ``process_query_sysu`` uses cameras 3
    and 6 in both modes).

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.

    Returns:
        int64 array of indices in ascending order; for a split sorted by
        (identity, camera, file name) this is AGW's query order.

    Raises:
        ValueError: on non-1-D or non-integer inputs or mismatched lengths.
    """
    _, cams = _split_arrays(pids, cams)
    return np.flatnonzero(np.isin(cams, SYSU_INFRARED_CAMS)).astype(np.int64)


def sysu_gallery(
    pids: np.ndarray,
    cams: np.ndarray,
    *,
    mode: str = "all",
    trial: int = 0,
    shots: int = 1,
) -> np.ndarray:
    """Indices of one random SYSU-MM01 gallery (AGW's draw order and random stream).

    Visits the identities in ascending order and, for each, the visible cameras of ``mode``
    in the order (1, 2, 4, 5); skips (identity, camera) pairs without images; draws with a
    private ``random.Random(trial)``: ``choice(files)`` for ``shots == 1`` (exactly AGW's
    ``random.seed(trial)``; ``random.choice(sorted files)``), else
    ``sample(files, min(shots, len(files)))``. ``files`` is the pair's samples in split
    order, which is file-name order when the split is sorted by (identity, camera, file
    name), as the dataset reader guarantees.

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        trial: random seed of the draw, ``>= 0`` (AGW runs trials 0..9).
        shots: images per (identity, camera): 1 (single-shot) or e.g. 10 (multi-shot).

    Returns:
        int64 array of indices into the split, in draw order (one block per (identity,
        camera), blocks in visiting order; inside a multi-shot block, the order
        ``random.sample`` returns).

    Raises:
        ValueError: on an unknown ``mode``, ``shots < 1``, ``trial < 0``, non-integer
            ``shots``/``trial``, or invalid ``pids``/``cams``.
    """
    pids, cams = _split_arrays(pids, cams)
    cameras = _mode_cameras(mode)
    _check_count("shots", shots, minimum=1)
    _check_count("trial", trial, minimum=0)
    return _draw(_camera_groups(pids, cams, cameras), int(trial), int(shots))


def sysu_ignore_mask(q_cams: np.ndarray, g_cams: np.ndarray) -> np.ndarray:
    """AGW's SYSU-MM01 removal rule: camera-3 queries ignore every camera-2 gallery image.

    Cameras 2 (visible) and 3 (infrared) are in the same room; AGW's ``eval_sysu`` removes,
    for a query from camera 3, all gallery images from camera 2, whatever their identity
    (the official MATLAB code does the same through its camera labels). Other queries
    ignore nothing.

    Args:
        q_cams: ``(Q,)`` integer cameras of the queries.
        g_cams: ``(G,)`` integer cameras of the gallery.

    Returns:
        ``(Q, G)`` bool array, ``True`` = remove from that query's ranking.

    Raises:
        ValueError: on non-1-D or non-integer inputs.
    """
    q_cams = _int_vector("q_cams", q_cams)
    g_cams = _int_vector("g_cams", g_cams)
    return (q_cams == _SYSU_IGNORE_QUERY_CAM)[:, None] & (
        g_cams == _SYSU_IGNORE_GALLERY_CAM
    )[None, :]


def sysu_trials(
    pids: np.ndarray,
    cams: np.ndarray,
    *,
    mode: str = "all",
    shots: int = 1,
    num_trials: int = 10,
) -> list[Trial]:
    """The SYSU-MM01 evaluation trials ``0..num_trials-1``: queries, galleries, ignore masks.

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.
        mode: ``"all"`` or ``"indoor"``.
        shots: images per (identity, visible camera), ``>= 1`` (1 single-shot, 10
            multi-shot).
        num_trials: number of random galleries, ``>= 1`` (the protocol uses 10).

    Returns:
        One :class:`Trial` per trial, with ``trial.index = t``, the query of
        :func:`sysu_query` (shared, read-only), the gallery of
        ``sysu_gallery(..., trial=t)`` and the mask of :func:`sysu_ignore_mask`.

    Raises:
        ValueError: as :func:`sysu_gallery`, or on ``num_trials < 1``.
    """
    pids, cams = _split_arrays(pids, cams)
    cameras = _mode_cameras(mode)
    _check_count("shots", shots, minimum=1)
    _check_count("num_trials", num_trials, minimum=1)
    query = sysu_query(pids, cams)
    groups = _camera_groups(pids, cams, cameras)
    q_cams = cams[query]
    trials = []
    for index in range(int(num_trials)):
        gallery = _draw(groups, index, int(shots))
        trials.append(
            Trial(
                index=index,
                query=query,
                gallery=gallery,
                ignore=sysu_ignore_mask(q_cams, cams[gallery]),
            )
        )
    return trials


# --------------------------------------------------------------------------- internals


def _int_vector(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def _split_arrays(pids: np.ndarray, cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pids = _int_vector("pids", pids)
    cams = _int_vector("cams", cams)
    if pids.size != cams.size:
        raise ValueError(f"pids has {pids.size} entries but cams has {cams.size}")
    return pids, cams


def _mode_cameras(mode: str) -> tuple[int, ...]:
    try:
        return SYSU_MODES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {sorted(SYSU_MODES)}, got {mode!r}") from None


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _camera_groups(
    pids: np.ndarray, cams: np.ndarray, cameras: tuple[int, ...]
) -> list[np.ndarray]:
    """Sample indices of every non-empty (identity, camera) pair, in AGW's visiting order.

    Pairs are ordered by ascending identity, then by the position of the camera in
    ``cameras``; inside a pair, indices keep their split order. O(N log N), vectorised.
    """
    eligible = np.flatnonzero(np.isin(cams, cameras))
    if eligible.size == 0:
        return []
    cam_rank = np.zeros(eligible.size, dtype=np.int64)
    for position, camera in enumerate(cameras):
        cam_rank[cams[eligible] == camera] = position
    order = np.lexsort((cam_rank, pids[eligible]))  # stable: split order inside a pair
    members = eligible[order]
    pid_sorted = pids[members]
    rank_sorted = cam_rank[order]
    starts = np.flatnonzero(
        (pid_sorted[1:] != pid_sorted[:-1]) | (rank_sorted[1:] != rank_sorted[:-1])
    ) + 1
    return np.split(members.astype(np.int64), starts)


def _draw(groups: list[np.ndarray], trial: int, shots: int) -> np.ndarray:
    """AGW's per-pair draw from ``random.Random(trial)`` (one Python call per pair)."""
    rng = random.Random(trial)
    picks: list[int] = []
    if shots == 1:
        for group in groups:
            picks.append(int(rng.choice(group)))
    else:
        for group in groups:
            files = group.tolist()
            picks.extend(rng.sample(files, min(shots, len(files))))
    return np.asarray(picks, dtype=np.int64)
