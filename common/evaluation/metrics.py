"""Ranking metrics for (cross-modality) person re-identification: CMC Rank-k, mAP and mINP.

Definitions (one query, its gallery ranked by ascending distance, ignored items removed):

* **CMC Rank-k** is 1 when a true match is among the first ``k`` entries. By default the
  ranked list is first *collapsed*: every gallery identity is kept only at its first
  occurrence, so Rank-k asks whether the query identity is among the first ``k`` distinct
  identities. This is the SYSU-MM01 rule of the official MATLAB code (repo
  ``wuancong/SYSU-MM01``, ``evaluation/get_cmc_multi_cam.m``, ``unique(..., 'stable')``)
  and of the AGW baseline (repo ``mangye16/Cross-Modal-Re-ID-baseline``,
  ``eval_metrics.py``, ``eval_sysu``: ``np.unique(..., return_index=True)`` then the
  indices in ascending order). RegDB (``eval_regdb`` in the same file) does not collapse:
  pass ``collapse_repeated_ids=False``.
* **AP** is computed on the *uncollapsed* list: ``AP = (1/R) * sum_k P@k * rel_k`` with
  ``R`` the number of true matches left after removal, i.e. the mean over the true matches
  of ``(matches so far) / (rank)``; the same as ``get_map_multi_cam.m`` and ``eval_sysu``.
* **INP** is ``R / (rank of the last true match)``, the negative-penalty measure of
  Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook",
  TPAMI 2021 (the AGW paper); mINP is its mean.
* Queries with no true match left after removal are skipped and not counted, as in
  ``eval_sysu``/``eval_regdb`` (``if not np.any(orig_cmc): continue``) and in the MATLAB
  code (``valid_probe_sample_count``).

Ranking order: ascending distance, ties broken by gallery index (what
``np.argsort(kind="stable")`` and MATLAB's ``sort`` give). AGW calls ``np.argsort`` with
the default, unstable quicksort, so on exact ties its order is unspecified; ours is fixed.

Implementation: vectorised over whole chunks of queries (no Python loop over queries or
gallery items), and without sorting the gallery. A query needs only the rank of each of its
true matches, and a rank is ``1 + (kept items ahead of it)``. Distances are mapped, per
chunk of queries, to integer bins by a monotone (non-decreasing) function; a per-row
histogram of the bins counts the kept items in lower bins, and the few items that share a
bin with a true match are compared exactly on ``(distance, gallery index)``. The result is
therefore exact whatever the binning, which only affects speed. The collapsed rank is
``1 + (distinct other identities whose first kept item is ahead of the first match)``,
found by marking the identities of the kept items in lower bins than the first match (read
from the rows that have any, when they are few, as for a useful model; else with a
per-identity minimum of the bins over every cell: ``np.minimum.reduceat``, or a padded
gather when identities have few images) plus the same exact check inside the first match's
bin. Work and memory are O(rows_per_chunk * G) per chunk.

Speed: the chunks are independent; up to ``_MAX_WORKERS`` threads scan them at once (numpy
releases the GIL inside most of the per-cell passes), and the per-chunk results are summed
in chunk order, so the result does not depend on the number of threads.
``benchmarks/bench_eval.py`` times the whole evaluation against a per-query loop (about 25x
with two threads, 20x with one, at SYSU-MM01 multi-shot scale).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral
from typing import Callable, Iterable

import numpy as np

__all__ = ["RankingMetrics", "evaluate_ranking", "same_camera_mask", "summarize"]

# Target number of (query, gallery) cells handled per chunk: the temporaries take about 30
# bytes per cell (16 MiB per thread), so a chunk's passes run mostly in cache.
_CHUNK_ELEMENTS = 1 << 19
# Threads scanning chunks at once (each with its own buffers); at most the CPUs this
# process may run on. Two threads gave 1.3x on two cores; more mostly wait for the GIL.
_MAX_WORKERS = 2
# Upper bound on the number of distance bins per row (bins are stored as int16).
_MAX_BINS = 4096
# The exact within-bin comparison enumerates (true match, item in the same bin) pairs; above
# this many pairs per chunk cell (degenerate inputs such as constant distances) a sort-based
# path is used instead.
_PAIRS_PER_CELL = 2
# Collapsed CMC: the identities ahead of the first match are marked item by item when at
# most 1/_SPARSE_LOWER_DIVISOR of a chunk's cells lie in lower bins than their row's first
# match (a useful ranking), else by a per-identity minimum over every cell.
_SPARSE_LOWER_DIVISOR = 8

# Per-identity minimum: use the padded layout when identities average fewer than this many
# gallery images and padding adds at most this factor of cells (see _GalleryIndex).
_PADDED_MIN_BELOW = 12
_PADDED_MAX_OVERHEAD = 3

_SUMMARY_KEYS = ("rank1", "rank5", "rank10", "rank20", "mean_ap", "minp")


@dataclass(frozen=True, eq=False)
class RankingMetrics:
    """Ranking metrics of one evaluation (one gallery trial).

    Attributes:
        cmc: float64 array of shape ``(max_rank,)``, read-only; ``cmc[k-1]`` is the Rank-k
            accuracy as a fraction in ``[0, 1]``; non-decreasing in ``k``.
        mean_ap: mean average precision, fraction in ``[0, 1]``.
        minp: mean inverse negative penalty, fraction in ``[0, 1]``.
        num_queries: number of queries with at least one valid true match, i.e. the number
            of queries the averages are taken over.

    Raises:
        ValueError: on construction, if ``cmc`` is not a non-empty 1-D array.
    """

    cmc: np.ndarray
    mean_ap: float
    minp: float
    num_queries: int

    def __post_init__(self) -> None:
        cmc = np.array(self.cmc, dtype=np.float64)
        if cmc.ndim != 1 or cmc.size == 0:
            raise ValueError(f"cmc must be a non-empty 1-D array, got shape {cmc.shape}")
        cmc.setflags(write=False)
        object.__setattr__(self, "cmc", cmc)
        object.__setattr__(self, "mean_ap", float(self.mean_ap))
        object.__setattr__(self, "minp", float(self.minp))
        object.__setattr__(self, "num_queries", int(self.num_queries))

    def rank(self, k: int) -> float:
        """Rank-k accuracy as a fraction in ``[0, 1]``.

        Raises:
            ValueError: if ``k`` is not in ``1..len(cmc)``.
        """
        if not isinstance(k, Integral) or isinstance(k, bool) or not 1 <= k <= self.cmc.size:
            raise ValueError(f"k must be an integer in 1..{self.cmc.size}, got {k!r}")
        return float(self.cmc[k - 1])

    @property
    def rank1(self) -> float:
        """Rank-1 accuracy, fraction in ``[0, 1]``."""
        return self.rank(1)

    @property
    def rank5(self) -> float:
        """Rank-5 accuracy, fraction in ``[0, 1]``."""
        return self.rank(5)

    @property
    def rank10(self) -> float:
        """Rank-10 accuracy, fraction in ``[0, 1]``."""
        return self.rank(10)

    @property
    def rank20(self) -> float:
        """Rank-20 accuracy, fraction in ``[0, 1]``."""
        return self.rank(20)


def evaluate_ranking(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    *,
    ignore: np.ndarray | None = None,
    max_rank: int = 20,
    collapse_repeated_ids: bool = True,
) -> RankingMetrics:
    """CMC, mAP and mINP of a query-by-gallery distance matrix.

    Args:
        dist: ``(Q, G)`` real array (float; integers are converted to float64), lower means
            more similar, e.g. ``1 - cosine similarity``. May hold ``+-inf``; not NaN.
        q_pids: ``(Q,)`` integer identity labels of the queries.
        g_pids: ``(G,)`` integer identity labels of the gallery.
        ignore: optional ``(Q, G)`` bool array; ``True`` removes that gallery item from that
            query's ranked list before anything is computed (it neither counts as a hit nor
            takes a rank). Use :func:`same_camera_mask` for the usual same-id-same-camera
            removal, ``common.evaluation.protocols.sysu_ignore_mask`` for SYSU-MM01's camera-3/camera-2
            rule.
        max_rank: length of the returned CMC, ``>= 1``. If the ranked lists are shorter
            (``G < max_rank``, or few distinct identities after collapsing), the CMC simply
            stays at its last value up to ``max_rank`` (AGW instead shortens the CMC to
            ``G``).
        collapse_repeated_ids: collapse repeated gallery identities (first occurrence kept)
            before computing the CMC, as SYSU-MM01 does. ``False`` gives the plain CMC of
            RegDB's ``eval_regdb``. mAP and mINP never collapse.

    Returns:
        :class:`RankingMetrics`, averaged over the queries that keep at least one true match
        after removal; the others are skipped and not counted in ``num_queries``.

    Ties: equal distances are ordered by gallery index, as ``np.argsort(kind="stable")``.

    Raises:
        ValueError: on wrong shapes or dtypes, NaN in ``dist``, ``max_rank < 1``, or when
            no query has a valid true match (the averages would be undefined).
    """
    dist = np.asarray(dist)
    if dist.ndim != 2:
        raise ValueError(f"dist must be a 2-D (queries, gallery) array, got shape {dist.shape}")
    if dist.dtype == np.bool_ or not (
        np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)
    ):
        raise ValueError(f"dist must hold real numbers, got dtype {dist.dtype}")
    if not np.issubdtype(dist.dtype, np.floating):
        dist = dist.astype(np.float64)
    num_q, num_g = dist.shape
    q_pids = _as_label_vector("q_pids", q_pids, num_q)
    g_pids = _as_label_vector("g_pids", g_pids, num_g)
    if ignore is not None:
        ignore = np.asarray(ignore)
        if ignore.dtype != np.bool_:
            raise ValueError(f"ignore must be a bool array, got dtype {ignore.dtype}")
        if ignore.shape != dist.shape:
            raise ValueError(f"ignore has shape {ignore.shape}, dist has shape {dist.shape}")
    if not isinstance(max_rank, Integral) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank must be an integer >= 1, got {max_rank!r}")
    max_rank = int(max_rank)

    # Compact identity labels: gallery labels 0..P-1, query label -1 when absent.
    uniq, g_lab = np.unique(g_pids, return_inverse=True)
    g_lab = g_lab.reshape(-1).astype(np.intp, copy=False)
    num_labels = uniq.size
    if num_labels:
        pos = np.minimum(np.searchsorted(uniq, q_pids), num_labels - 1)
        q_lab = np.where(uniq[pos] == q_pids, pos, -1).astype(np.intp)
    else:
        q_lab = np.full(num_q, -1, dtype=np.intp)
    gallery = _GalleryIndex(g_lab, num_labels)

    n_bins = int(min(max(num_g, 1), _MAX_BINS))
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(num_g, 1))

    starts = range(0, num_q, rows_per_chunk)

    def scan(chunk_starts: range) -> list:
        work = _Workspace(min(rows_per_chunk, max(num_q, 1)), num_g, n_bins)
        return [
            _chunk_stats(
                dist[start : start + rows_per_chunk],
                q_lab[start : start + rows_per_chunk],
                None if ignore is None else ignore[start : start + rows_per_chunk],
                gallery,
                n_bins,
                collapse_repeated_ids,
                work,
            )
            for start in chunk_starts
        ]

    workers = max(1, min(_MAX_WORKERS, _available_cpus(), len(starts)))
    if workers == 1:
        per_chunk = scan(starts)
    else:  # worker w scans chunks w, w + workers, ...; results go back in chunk order
        with ThreadPoolExecutor(workers) as pool:
            shares = list(pool.map(scan, [starts[w::workers] for w in range(workers)]))
        per_chunk = [shares[i % workers][i // workers] for i in range(len(starts))]

    rank_hist = np.zeros(max_rank + 2, dtype=np.int64)
    ap_sum = 0.0
    inp_sum = 0.0
    num_valid = 0
    for stats in per_chunk:
        if stats is None:
            continue
        cmc_rank, ap, inp = stats
        rank_hist += np.bincount(np.minimum(cmc_rank, max_rank + 1), minlength=max_rank + 2)
        ap_sum += float(ap.sum())
        inp_sum += float(inp.sum())
        num_valid += int(ap.size)

    if num_valid == 0:
        raise ValueError(
            "no query has a true match in the gallery (after removing ignored items); "
            "the metrics are undefined"
        )
    cmc = np.cumsum(rank_hist[1 : max_rank + 1]) / num_valid
    return RankingMetrics(
        cmc=cmc, mean_ap=ap_sum / num_valid, minp=inp_sum / num_valid, num_queries=num_valid
    )


def evaluate_ranking_per_query(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    *,
    ignore: np.ndarray | None = None,
    max_rank: int = 20,
    collapse_repeated_ids: bool = True,
) -> RankingMetrics:
    """The readable reference of :func:`evaluate_ranking`: the same metrics, one query at a
    time, written as the evaluation loops of the papers' code read (AGW's ``eval_sysu`` /
    ``eval_regdb``, mangye16/Cross-Modal-Re-ID-baseline:eval_metrics.py).

    For each query: sort the gallery by distance (stable: ties keep gallery order, as
    :func:`evaluate_ranking`), drop the items ``ignore`` removes, and skip the query when no
    true match is left; the CMC row is whether a true match appears in the first k of the
    list (after collapsing repeated identities, first occurrence kept, when
    ``collapse_repeated_ids``); AP is the mean precision at the ranks of the true matches,
    INP the number of true matches over the rank of the last one. Everything is averaged
    over the queries kept. O(Q G log G) Python-level work: for tests and small checks;
    :func:`evaluate_ranking` is the engine (``tests/test_metrics.py`` checks that both agree).

    Arguments, return value and raised errors: as :func:`evaluate_ranking`.
    """
    dist = np.asarray(dist)
    if dist.ndim != 2:
        raise ValueError(f"dist must be 2-D (Q, G), got shape {dist.shape}")
    q_pids = _as_label_vector("q_pids", q_pids, dist.shape[0])
    g_pids = _as_label_vector("g_pids", g_pids, dist.shape[1])
    if not isinstance(max_rank, Integral) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank must be an integer >= 1, got {max_rank!r}")
    if ignore is not None and np.shape(ignore) != dist.shape:
        raise ValueError(f"ignore must have the shape of dist {dist.shape}, got {np.shape(ignore)}")
    cmc_rows, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")  # gallery indices, nearest first
        kept = order if ignore is None else order[~np.asarray(ignore[i], dtype=bool)[order]]
        ranked = g_pids[kept]  # identities in rank order
        hits = ranked == q_pids[i]
        if not hits.any():
            continue  # no true match left: the query does not count
        listed = ranked
        if collapse_repeated_ids:
            _, first_seen = np.unique(ranked, return_index=True)
            listed = ranked[np.sort(first_seen)]  # each identity once, at its first rank
        found = np.cumsum(listed == q_pids[i]) > 0  # found[k-1]: a match within the first k
        row = np.full(max_rank, found[-1], dtype=np.float64)
        row[: min(max_rank, found.size)] = found[:max_rank]
        cmc_rows.append(row)
        ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the true matches
        aps.append(float(np.mean(np.arange(1, ranks.size + 1) / ranks)))  # precision at each match
        inps.append(ranks.size / ranks[-1])
    if not aps:
        raise ValueError("no query has a true match in its gallery: nothing to evaluate")
    return RankingMetrics(np.mean(cmc_rows, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps))


def same_camera_mask(
    q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray
) -> np.ndarray:
    """The standard (Market-1501 style) removal mask: same identity AND same camera.

    Also LLCM's rule (``ZYK100/LLCM``, ``eval_llcm``), whose cameras are shared by both
    modalities.

    Args:
        q_pids, q_cams: ``(Q,)`` integer identity and camera labels of the queries.
        g_pids, g_cams: ``(G,)`` integer identity and camera labels of the gallery.

    Returns:
        ``(Q, G)`` bool array, ``True`` where the gallery item must be ignored for that query.

    Raises:
        ValueError: on non-1-D or non-integer inputs, or mismatched lengths.
    """
    q_pids = _as_label_vector("q_pids", q_pids)
    q_cams = _as_label_vector("q_cams", q_cams, q_pids.size)
    g_pids = _as_label_vector("g_pids", g_pids)
    g_cams = _as_label_vector("g_cams", g_cams, g_pids.size)
    mask = np.zeros((q_pids.size, g_pids.size), dtype=bool)
    if mask.size == 0:
        return mask
    # Compact (identity, camera) keys; each query marks the gallery items with its key
    # (a sparse fill of a zeroed array: much faster than a broadcast comparison).
    pid_codes, pid_index = np.unique(np.concatenate([q_pids, g_pids]), return_inverse=True)
    cam_codes, cam_index = np.unique(np.concatenate([q_cams, g_cams]), return_inverse=True)
    key = pid_index.reshape(-1).astype(np.int64) * cam_codes.size + cam_index.reshape(-1)
    q_key, g_key = key[: q_pids.size], key[q_pids.size :]
    order = np.argsort(g_key, kind="stable")
    sorted_key = g_key[order]
    lo = np.searchsorted(sorted_key, q_key, side="left")
    count = np.searchsorted(sorted_key, q_key, side="right") - lo
    rows = np.repeat(np.arange(q_pids.size), count)
    within = np.arange(rows.size) - np.repeat(_exclusive_cumsum(count), count)
    mask[rows, order[np.repeat(lo, count) + within]] = True
    return mask


def per_query_average_precision(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, *, ignore: np.ndarray | None = None
) -> np.ndarray:
    """Average precision of every query, for looking at single queries (``show-ranks``).

    AP = (1 / R) * sum over the ranks k of the true matches of precision@k, on the ranked
    list after removing ``ignore``'d gallery items (no collapsing), exactly the AP that
    :func:`evaluate_ranking` averages into mAP; ties ordered by gallery index.

    Args:
        dist: ``(Q, G)`` float distances, lower = more similar.
        q_pids, g_pids: ``(Q,)``, ``(G,)`` integer identities.
        ignore: optional ``(Q, G)`` bool removal mask.

    Returns:
        float64 ``(Q,)`` in ``[0, 1]``; NaN for a query without a true match left.

    Raises:
        ValueError: on mismatched shapes.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be 2-D, got shape {dist.shape}")
    q_pids = _as_label_vector("q_pids", q_pids, dist.shape[0])
    g_pids = _as_label_vector("g_pids", g_pids, dist.shape[1])
    keep = np.ones(dist.shape, dtype=bool) if ignore is None else ~np.asarray(ignore, dtype=bool)
    if keep.shape != dist.shape:
        raise ValueError(f"ignore has shape {keep.shape}, dist has shape {dist.shape}")
    order = np.argsort(dist, axis=1, kind="stable")  # (Q, G)
    kept = np.take_along_axis(keep, order, axis=1)
    match = (g_pids[order] == q_pids[:, None]) & kept
    rank = np.cumsum(kept, axis=1)  # 1-based position among the kept items
    hits = np.cumsum(match, axis=1)
    n_true = match.sum(axis=1)
    precision_sum = np.where(match, hits / np.maximum(rank, 1), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_true > 0, precision_sum / n_true, np.nan)


def summarize(trials: Iterable[RankingMetrics]) -> dict:
    """Mean and spread of several trials (e.g. SYSU-MM01's 10 random galleries), in percent.

    Args:
        trials: one :class:`RankingMetrics` per trial, each with a CMC of length >= 20.

    Returns:
        ``{"rank1": {"mean": m, "std": s}, "rank5": ..., "rank10": ..., "rank20": ...,
        "mean_ap": ..., "minp": ..., "trials": [{"rank1": v, ..., "minp": v,
        "num_queries": n}, ...]}``. All values are percentages in ``[0, 100]``; ``std`` is
        the population standard deviation over trials (``np.std``, ``ddof=0``), 0 for one
        trial. The mean equals AGW's ``test.py`` average over trials.

    Raises:
        ValueError: if ``trials`` is empty or a trial's CMC is shorter than 20.
    """
    trials = list(trials)
    if not trials:
        raise ValueError("summarize needs at least one trial")
    rows = []
    for trial in trials:
        if not isinstance(trial, RankingMetrics):
            raise ValueError(f"expected RankingMetrics, got {type(trial).__name__}")
        rows.append(
            {
                "rank1": 100.0 * trial.rank1,
                "rank5": 100.0 * trial.rank5,
                "rank10": 100.0 * trial.rank10,
                "rank20": 100.0 * trial.rank20,
                "mean_ap": 100.0 * trial.mean_ap,
                "minp": 100.0 * trial.minp,
                "num_queries": trial.num_queries,
            }
        )
    summary: dict = {}
    for key in _SUMMARY_KEYS:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std())}
    summary["trials"] = rows
    return summary


# --------------------------------------------------------------------------- internals


def _as_label_vector(name: str, values: np.ndarray, length: int | None = None) -> np.ndarray:
    """Validate a 1-D integer label array (and its length); return it as an ndarray."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if not arr.size:
        arr = arr.astype(np.int64)
    if length is not None and arr.size != length:
        raise ValueError(f"{name} has {arr.size} entries, expected {length}")
    return arr


def _available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _GalleryIndex:
    """Gallery columns grouped by compact identity label (computed once per evaluation)."""

    def __init__(self, g_lab: np.ndarray, num_labels: int) -> None:
        self.labels = g_lab
        self.num_labels = num_labels
        self.cols_by_label = np.argsort(g_lab, kind="stable")
        counts = np.bincount(g_lab, minlength=num_labels)
        self.label_start = np.zeros(num_labels + 1, dtype=np.intp)
        np.cumsum(counts, out=self.label_start[1:])
        # When the gallery is already ordered by identity (as the SYSU draw returns it), the
        # per-identity reduction can run on the columns as they are.
        self.grouped = bool(np.all(g_lab[1:] >= g_lab[:-1]))
        # np.minimum.reduceat pays a fixed cost per (row, identity) segment, which dominates
        # when identities have few images (single-shot: <= 4). Then a (K, P) table of each
        # identity's columns, padded to the largest count K by repeating its last column
        # (harmless for a minimum), turns the reduction into K vector passes instead.
        self.padded_cols = None
        if num_labels and g_lab.size < _PADDED_MIN_BELOW * num_labels:
            most = int(counts.max())
            if most * num_labels <= _PADDED_MAX_OVERHEAD * g_lab.size:
                k = np.arange(most)[:, None]
                slot = self.label_start[:-1][None, :] + np.minimum(k, counts[None, :] - 1)
                self.padded_cols = self.cols_by_label[slot]  # (K, P)

    def min_per_label(self, values: np.ndarray) -> np.ndarray:
        """Per-identity minimum of each row: ``(rows, G)`` -> ``(rows, P)``."""
        if self.padded_cols is not None:
            return values[:, self.padded_cols].min(axis=1)  # (rows, K, P) -> (rows, P)
        by_label = values if self.grouped else values[:, self.cols_by_label]
        return np.minimum.reduceat(by_label, self.label_start[:-1], axis=1)


class _Workspace:
    """Buffers reused by every chunk of one evaluation (per cell and per (row, bin))."""

    def __init__(self, rows_per_chunk: int, num_g: int, n_bins: int) -> None:
        cells = rows_per_chunk * (n_bins + 1)
        self.prefix = np.empty(cells + 1, dtype=np.intp)
        self.prefix[0] = 0
        self.match_bin = np.zeros(cells, dtype=bool)
        self.scratch = np.empty(rows_per_chunk * num_g, dtype=np.float32)


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size, dtype=np.intp)
    if counts.size > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


def _bin_indices(dist_c: np.ndarray, n_bins: int, buffer: np.ndarray) -> np.ndarray:
    """Map a chunk of distances to int16 bins ``0..n_bins-1``, non-decreasing in distance.

    Only monotonicity matters for correctness (equal distances share a bin; a larger
    distance never gets a smaller bin); how evenly the bins are filled only affects speed.
    ``buffer`` is float32 scratch space of at least ``dist_c.size`` elements.

    Raises:
        ValueError: if the chunk contains NaN.
    """
    x = buffer[: dist_c.size].reshape(dist_c.shape)
    with np.errstate(over="ignore"):  # |d| > 3.4e38 becomes +-inf: robust path below
        np.copyto(x, dist_c, casting="same_kind")  # rounding to float32 is monotone
    lo = float(x.min())
    hi = float(x.max())
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("dist contains NaN")
    if -1e37 < lo and hi < 1e37:  # finite, and hi - lo cannot overflow float32
        scale = np.float32((n_bins - 1) / (hi - lo)) if hi > lo else np.float32(0.0)
        if np.isfinite(scale):
            # The subtraction (x >= lo) and the positive scaling are monotone too; the
            # result lies in [0, n_bins - 1 + 1e-3] (float32 rounding), so truncation gives
            # a bin.
            x -= np.float32(lo)
            x *= scale
            return x.astype(np.int16)
    return _bin_indices_robust(dist_c, n_bins)


def _bin_indices_robust(dist_c: np.ndarray, n_bins: int) -> np.ndarray:
    """Slow path of :func:`_bin_indices` for infinities and extreme ranges (no NaN here)."""
    d = dist_c.astype(np.float64)
    finite = np.isfinite(d)
    if finite.any():
        lo = float(d[finite].min())
        hi = float(d[finite].max())
    else:
        lo = hi = 0.0
    # Halving keeps hi - lo finite for any finite pair; +-inf are clipped to the ends.
    t = np.clip(d, lo, hi) * 0.5 - lo * 0.5
    half_span = hi * 0.5 - lo * 0.5
    with np.errstate(over="ignore", divide="ignore"):
        scale = (n_bins - 1) / half_span if half_span > 0 else 0.0
    if not np.isfinite(scale):
        scale = 0.0
    t *= scale
    np.clip(t, 0, n_bins - 1, out=t)
    return t.astype(np.int16)


def _chunk_stats(
    dist_c: np.ndarray,
    q_lab_c: np.ndarray,
    ign_c: np.ndarray | None,
    gallery: _GalleryIndex,
    n_bins: int,
    collapse: bool,
    work: _Workspace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-query statistics of one chunk of query rows.

    Returns ``(cmc_rank, ap, inp)`` for the valid rows (``cmc_rank`` is the collapsed rank
    of the query identity, or the rank of the first true match when not collapsing), or
    ``None`` when no row of the chunk has a valid true match.
    """
    n_rows, num_g = dist_c.shape
    if not np.any(q_lab_c >= 0):
        return None  # no query of the chunk has its identity in the gallery
    g_lab = gallery.labels
    stride = n_bins + 1  # bin n_bins of every row holds the ignored items

    bins = _bin_indices(dist_c, n_bins, work.scratch)
    if ign_c is not None:
        # bins are < n_bins, so a maximum sends exactly the ignored items to the extra bin
        # (much faster than np.putmask).
        np.maximum(bins, np.multiply(ign_c, n_bins, dtype=bins.dtype), out=bins)
    bins_1d = bins.reshape(-1)
    row_base = np.arange(n_rows, dtype=np.intp) * stride
    flat = bins.astype(np.intp)
    flat += row_base[:, None]
    flat_1d = flat.reshape(-1)
    # prefix[f] = kept items in (row, bin) cells before cell f; the kept items of a row in
    # bins below b are then prefix[row_base + b] - prefix[row_base].
    prefix = work.prefix[: n_rows * stride + 1]
    np.cumsum(np.bincount(flat_1d, minlength=n_rows * stride), out=prefix[1:])

    # True matches: the gallery columns of the query's identity, minus the ignored ones.
    has_label = q_lab_c >= 0
    lab = np.where(has_label, q_lab_c, 0)
    per_row = np.where(has_label, gallery.label_start[lab + 1] - gallery.label_start[lab], 0)
    total = int(per_row.sum())
    if total == 0:
        return None
    m_row = np.repeat(np.arange(n_rows, dtype=np.intp), per_row)
    slot = np.arange(total, dtype=np.intp) + np.repeat(
        gallery.label_start[lab] - _exclusive_cumsum(per_row), per_row
    )
    m_lin = m_row * num_g + gallery.cols_by_label[slot]
    m_bin = bins_1d[m_lin]
    if ign_c is not None:
        keep = m_bin != n_bins
        if not keep.any():
            return None
        m_row = m_row[keep]
        m_bin = m_bin[keep]
    m_flat = row_base[m_row] + m_bin

    # Candidates: every kept item that shares a (row, bin) with a true match (the matches
    # themselves included). Ignored items sit in the extra bin, which holds no match.
    match_bin = work.match_bin[: n_rows * stride]
    match_bin[m_flat] = True
    c_lin = np.flatnonzero(match_bin[flat_1d])
    match_bin[m_flat] = False  # leave the shared buffer all-False for the next chunk
    c_row, c_col = np.divmod(c_lin, num_g)
    c_bin = bins_1d[c_lin]
    if dist_c.flags.c_contiguous:
        c_dist = dist_c.reshape(-1)[c_lin]
    else:
        c_dist = dist_c[c_row, c_col]
    c_match = g_lab[c_col] == q_lab_c[c_row]

    # Exact position of each match among the kept items of its bin.
    within, order, ahead_of = _within_bin(
        c_row, c_bin, c_dist, c_col, c_match, stride,
        pair_limit=_PAIRS_PER_CELL * n_rows * num_g,
    )
    m_cand = order[np.flatnonzero(c_match[order])]  # candidate index of each match
    row = c_row[m_cand]
    # 1-based rank among the kept items of the row
    rank = prefix[row_base[row] + c_bin[m_cand]] - prefix[row_base[row]] + within + 1

    # Order the matches by (row, rank): the j-th match of a row has precision j / rank.
    by_rank = np.argsort(row * (num_g + 1) + rank, kind="stable")
    row = row[by_rank]
    rank = rank[by_rank]
    count = np.bincount(row, minlength=n_rows)
    valid = np.flatnonzero(count)
    row_start = _exclusive_cumsum(count)
    j = np.arange(row.size, dtype=np.intp) - row_start[row] + 1
    ap = np.bincount(row, weights=j / rank, minlength=n_rows)[valid] / count[valid]
    first = row_start[valid]
    last = first + count[valid] - 1
    inp = count[valid] / rank[last]
    if not collapse:
        return rank[first], ap, inp

    # Collapsed rank = 1 + distinct other identities whose first kept item precedes the
    # first match: those with a kept item in a lower bin than the first match, plus those
    # with none there but an item ahead of the first match inside its bin.
    first_m = by_rank[first]  # match index (m_cand order) of each valid row's first match
    first_bin = np.zeros(n_rows, dtype=bins.dtype)  # 0 for rows without a match: no effect
    first_bin[valid] = c_bin[m_cand[first_m]]
    # Kept items in lower bins than the first match, per row: its rank minus its position
    # inside its bin.
    n_lower = np.zeros(n_rows, dtype=np.intp)
    n_lower[valid] = prefix[row_base[valid] + first_bin[valid]] - prefix[row_base[valid]]
    if int(n_lower.sum()) * _SPARSE_LOWER_DIVISOR <= n_rows * num_g:
        # Few such items (a good ranking): mark their identities, scanning only the rows
        # that have some.
        rows = np.flatnonzero(n_lower)
        at, l_col = np.divmod(np.flatnonzero(bins[rows] < first_bin[rows, None]), num_g)
        below_first = np.zeros((n_rows, gallery.num_labels), dtype=bool)
        below_first[rows[at], g_lab[l_col]] = True
    else:
        below_first = gallery.min_per_label(bins) < first_bin[:, None]  # (rows, P)
    ahead = np.count_nonzero(below_first[valid], axis=1)

    is_first = np.zeros(m_cand.size, dtype=bool)
    is_first[first_m] = True
    tie_c = ahead_of(is_first)  # candidates ahead of a first match inside its bin
    if tie_c.size:
        t_row = c_row[tie_c]
        t_lab = g_lab[c_col[tie_c]]
        new_label = ~below_first[t_row, t_lab]
        keys = np.unique(t_row[new_label] * gallery.num_labels + t_lab[new_label])
        ahead = ahead + np.bincount(keys // gallery.num_labels, minlength=n_rows)[valid]
    return ahead + 1, ap, inp


def _within_bin(
    c_row: np.ndarray,
    c_bin: np.ndarray,
    c_dist: np.ndarray,
    c_col: np.ndarray,
    c_match: np.ndarray,
    stride: int,
    *,
    pair_limit: int,
) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Exact order of the true matches inside their (row, bin) groups of candidates.

    Args:
        c_row, c_bin: ``(n,)`` row (ascending) and bin of each candidate; a group is the
            set of candidates with the same (row, bin).
        c_dist: ``(n,)`` exact distance; ``c_col``: ``(n,)`` gallery index (the tie-break),
            ascending within a row.
        c_match: ``(n,)`` bool, the candidate is a true match.
        stride: bins per row (for a combined group key).
        pair_limit: above this many (match, group member) pairs, sort instead of comparing
            pairs (only degenerate inputs, e.g. constant distances, get there).

    Returns:
        ``(within, order, ahead_of)``. ``order`` permutes the candidates so that groups are
        contiguous; the matches, in that order, are ``order[flatnonzero(c_match[order])]``
        ("match index" below refers to this order). ``within[i]``: number of candidates of
        match ``i``'s group strictly ahead of it in ``(distance, gallery index)`` order.
        ``ahead_of(selected)``, with ``selected`` a bool mask over match indices: the
        candidate indices ahead of the selected matches in their groups.
    """
    n = c_row.size
    row_key = c_row.astype(np.int16 if n == 0 or c_row[-1] < 2**15 else np.int32)
    order = np.lexsort((c_bin, row_key))  # int16 keys: two radix passes
    group_key = c_row * stride + c_bin
    s_key = group_key[order]
    new_group = np.empty(n, dtype=bool)
    new_group[:1] = True
    np.not_equal(s_key[1:], s_key[:-1], out=new_group[1:])
    group_start = np.flatnonzero(new_group)
    group_size = np.diff(np.append(group_start, n))
    group_of = np.cumsum(new_group) - 1
    m_pos = np.flatnonzero(c_match[order])
    m_start = group_start[group_of[m_pos]]
    m_size = group_size[group_of[m_pos]]
    n_pairs = int(m_size.sum())

    if n_pairs <= pair_limit:
        # Compare every match with every member of its group (groups are small).
        pair_m = np.repeat(np.arange(m_pos.size, dtype=np.intp), m_size)
        offset = np.repeat(m_start - _exclusive_cumsum(m_size), m_size)
        pair_c = order[np.arange(n_pairs, dtype=np.intp) + offset]
        me = order[m_pos[pair_m]]
        d_other = c_dist[pair_c]
        d_me = c_dist[me]
        ahead = (d_other < d_me) | ((d_other == d_me) & (c_col[pair_c] < c_col[me]))
        within = np.bincount(pair_m, weights=ahead, minlength=m_pos.size).astype(np.intp)
        pair_m = pair_m[ahead]
        pair_c = pair_c[ahead]

        def ahead_of(selected: np.ndarray) -> np.ndarray:
            return pair_c[selected[pair_m]]

        return within, order, ahead_of

    # Sort by (row, distance), stable, so ties stay in gallery order; bins are monotone in
    # the distance, so the (row, bin) groups stay contiguous and a match's position in its
    # group is the count of candidates ahead of it.
    order = np.lexsort((c_dist, row_key))
    s_key = group_key[order]
    np.not_equal(s_key[1:], s_key[:-1], out=new_group[1:])
    group_start = np.flatnonzero(new_group)
    group_of = np.cumsum(new_group) - 1
    m_pos = np.flatnonzero(c_match[order])
    m_start = group_start[group_of[m_pos]]
    within = (m_pos - m_start).astype(np.intp)

    def ahead_of(selected: np.ndarray) -> np.ndarray:
        chosen = np.flatnonzero(selected)
        counts = within[chosen]
        offset = np.repeat(m_start[chosen] - _exclusive_cumsum(counts), counts)
        return order[np.arange(int(counts.sum()), dtype=np.intp) + offset]

    return within, order, ahead_of
