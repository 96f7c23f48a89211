"""Benchmark of the SYSU-MM01 evaluation: vectorised metrics against a per-query loop.

Builds a synthetic test split shaped like SYSU-MM01's (96 identities; 3803 infrared query
images over cameras 3 and 6; 301 (identity, visible camera) pairs with 10-35 images each,
so a 10-shot all-search gallery has 3010 images) and random 2048-d features with an
identity signal, all from fixed seeds. Then:

1. times ``common.evaluation.metrics.evaluate_ranking`` (with the SYSU camera-3/camera-2 ignore mask,
   whose construction is included) against the library's plain per-query reference
   ``evaluate_ranking_per_query`` (AGW's ``eval_sysu`` loop, repo
   ``mangye16/Cross-Modal-Re-ID-baseline``, ``eval_metrics.py``: per query sort, remove,
   collapse repeated ids with ``np.unique``, compute AP/INP; numpy inside each query), on
   the 3803 x 3010 multi-shot distance matrix (float64, as AGW's ``test.py`` computes it),
   and checks CMC/mAP/mINP agree to 1e-6. ``evaluate_ranking``
   scans its chunks with up to two threads (``common.evaluation.metrics._MAX_WORKERS``); it is also
   timed with one thread, and on features without any identity signal (its worst case:
   a good ranking lets it skip work, see ``common.evaluation.metrics``), for information;
2. times a full 10-trial single-shot all-search test from extracted (float32) features:
   gallery draws and masks (``sysu_trials``), distances, metrics and the summary.

The last line printed is ``eval speedup: N.Nx`` (reference time / vectorised time, as
shipped: threads included). Timings are best-of-N wall times and vary with the load of the
machine.

Usage (from the repository root)::

    python benchmarks/bench_eval.py            # full SYSU-MM01 scale
    python benchmarks/bench_eval.py --quick    # 1/4 scale (24 ids, ~951 x 750)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import common  # noqa: F401
except ImportError:  # run as a script from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.evaluation import metrics
from common.evaluation.metrics import RankingMetrics, evaluate_ranking, evaluate_ranking_per_query, summarize
from common.evaluation.protocols import (
    SYSU_INFRARED_CAMS,
    SYSU_VISIBLE_CAMS,
    sysu_gallery,
    sysu_ignore_mask,
    sysu_query,
    sysu_trials,
)

FEATURE_DIM = 2048
MAX_RANK = 20
TOLERANCE = 1e-6


def make_test_split(num_ids: int, num_queries: int, num_visible_pairs: int, seed: int = 0):
    """Synthetic SYSU-MM01-like test split, sorted by (pid, cam, image).

    Returns ``(pids, cams)``, int64 arrays. Every identity has both infrared cameras and at
    least one visible camera; each present (pid, visible cam) has 10-35 images.
    """
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 534), size=num_ids, replace=False))
    # Visible pairs: one random camera per identity, then random extra pairs.
    pairs = {(int(pid), int(rng.choice(SYSU_VISIBLE_CAMS))) for pid in ids}
    others = [(int(p), c) for p in ids for c in SYSU_VISIBLE_CAMS if (int(p), c) not in pairs]
    extra = rng.choice(len(others), size=num_visible_pairs - len(pairs), replace=False)
    pairs |= {others[i] for i in extra}
    counts = {pair: int(rng.integers(10, 36)) for pair in pairs}
    # Infrared: num_queries images spread over (pid, cam 3/6), at least one each.
    ir_pairs = [(int(p), c) for p in ids for c in SYSU_INFRARED_CAMS]
    spread = rng.multinomial(num_queries - len(ir_pairs), np.full(len(ir_pairs), 1 / len(ir_pairs)))
    ir_sizes = 1 + spread
    counts.update({pair: int(n) for pair, n in zip(ir_pairs, ir_sizes)})
    pids, cams = [], []
    for pid, cam in sorted(counts):
        pids.extend([pid] * counts[(pid, cam)])
        cams.extend([cam] * counts[(pid, cam)])
    return np.array(pids, dtype=np.int64), np.array(cams, dtype=np.int64)


def make_features(pids: np.ndarray, seed: int = 1, noise: float = 4.5) -> np.ndarray:
    """L2-normalised float32 features: a per-identity centre plus Gaussian noise, (N, 2048).

    The default noise gives AGW-like accuracy (about 50 % single-shot Rank-1).
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(pids, return_inverse=True)
    centres = rng.standard_normal((uniq.size, FEATURE_DIM), dtype=np.float32)
    noise_term = rng.standard_normal((pids.size, FEATURE_DIM), dtype=np.float32)
    feats = centres[inverse] + noise * noise_term
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats


def best_of(repeats: int, fn):
    """Minimum wall time of ``repeats`` calls (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_ten_trials(pids, cams, feats) -> tuple[float, float, dict]:
    """Full single-shot all-search test from extracted features.

    Returns ``(wall seconds, seconds inside evaluate_ranking, summary)``.
    """
    start = time.perf_counter()
    trials = sysu_trials(pids, cams, mode="all", shots=1, num_trials=10)
    query = trials[0].query
    q_feats, q_pids = feats[query], pids[query]
    results: list[RankingMetrics] = []
    in_metrics = 0.0
    for trial in trials:
        dist = 1.0 - q_feats @ feats[trial.gallery].T  # cosine distance, (Q, G) float32
        tick = time.perf_counter()
        results.append(evaluate_ranking(dist, q_pids, pids[trial.gallery], ignore=trial.ignore))
        in_metrics += time.perf_counter() - tick
    summary = summarize(results)
    return time.perf_counter() - start, in_metrics, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run at 1/4 scale")
    args = parser.parse_args(argv)
    scale = 4 if args.quick else 1
    num_ids, num_queries, num_pairs = 96 // scale, round(3803 / scale), round(301 / scale)

    pids, cams = make_test_split(num_ids, num_queries, num_pairs)
    feats = make_features(pids)
    query = sysu_query(pids, cams)
    gallery = sysu_gallery(pids, cams, mode="all", trial=0, shots=10)
    q_pids, g_pids, q_cams, g_cams = pids[query], pids[gallery], cams[query], cams[gallery]
    dist = 1.0 - feats[query].astype(np.float64) @ feats[gallery].astype(np.float64).T
    print(
        f"SYSU-MM01-like split ({'quick, 1/4' if args.quick else 'full'} scale): {num_ids} ids, "
        f"{query.size} queries x {gallery.size} gallery (10-shot all-search, trial 0), "
        f"{FEATURE_DIM}-d features, float64 cosine distance"
    )

    ref_time, expected = best_of(
        1 if args.quick else 2,
        lambda: evaluate_ranking_per_query(dist, q_pids, g_pids, ignore=sysu_ignore_mask(q_cams, g_cams), max_rank=MAX_RANK),
    )
    expected = (expected.cmc, expected.mean_ap, expected.minp, expected.num_queries)

    def vectorised(distances: np.ndarray = dist) -> RankingMetrics:
        ignore = sysu_ignore_mask(q_cams, g_cams)
        return evaluate_ranking(distances, q_pids, g_pids, ignore=ignore, max_rank=MAX_RANK)

    vec_time, got = best_of(7, vectorised)
    shipped_workers = metrics._MAX_WORKERS
    metrics._MAX_WORKERS = 1
    try:
        one_thread_time, _ = best_of(5, vectorised)
    finally:
        metrics._MAX_WORKERS = shipped_workers
    noise = make_features(pids, seed=2, noise=1e6)  # the identity signal drowned in noise
    noise_dist = 1.0 - noise[query].astype(np.float64) @ noise[gallery].astype(np.float64).T
    worst_time, _ = best_of(3, lambda: vectorised(noise_dist))
    d_cmc = float(np.max(np.abs(got.cmc - expected[0])))
    d_map = abs(got.mean_ap - expected[1])
    d_minp = abs(got.minp - expected[2])
    agree = max(d_cmc, d_map, d_minp) <= TOLERANCE and got.num_queries == expected[3]
    print(f"per-query reference : {ref_time * 1e3:8.1f} ms")
    print(f"evaluate_ranking    : {vec_time * 1e3:8.1f} ms  (best of 7, ignore mask included)")
    print(
        f"  one thread        : {one_thread_time * 1e3:8.1f} ms  "
        f"({ref_time / one_thread_time:.1f}x; shipped: up to {shipped_workers} threads)"
    )
    print(
        f"  no identity signal: {worst_time * 1e3:8.1f} ms  "
        f"(random features, worst case; {ref_time / worst_time:.1f}x)"
    )
    print(
        f"agreement           : max|dCMC| {d_cmc:.1e}, |dmAP| {d_map:.1e}, "
        f"|dmINP| {d_minp:.1e}, queries {got.num_queries}/{expected[3]} -> "
        f"{'OK' if agree else 'MISMATCH'} (tol {TOLERANCE:g})"
    )
    print(
        f"multi-shot metrics  : Rank-1 {got.rank1:.2%}  Rank-10 {got.rank10:.2%}  "
        f"Rank-20 {got.rank20:.2%}  mAP {got.mean_ap:.2%}  mINP {got.minp:.2%}"
    )

    run_ten_trials(pids, cams, feats)  # warm-up (BLAS threads, page faults)
    wall, in_metrics, summary = run_ten_trials(pids, cams, feats)
    print(
        f"10-trial single-shot test (draws + distances + metrics): {wall:.3f} s wall "
        f"({in_metrics:.3f} s in evaluate_ranking)"
    )
    print(
        f"single-shot summary : Rank-1 {summary['rank1']['mean']:.2f} +- "
        f"{summary['rank1']['std']:.2f}  mAP {summary['mean_ap']['mean']:.2f} +- "
        f"{summary['mean_ap']['std']:.2f}  mINP {summary['minp']['mean']:.2f} (%, 10 trials)"
    )
    print(f"eval speedup: {ref_time / vec_time:.1f}x")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
