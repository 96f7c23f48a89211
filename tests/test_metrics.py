"""Tests for common.evaluation.metrics: hand-worked rankings, removal, skipping, ties, and agreement
of the engine (evaluate_ranking) with the library's readable per-query reference
(evaluate_ranking_per_query, the loop AGW's eval_sysu runs)."""

from __future__ import annotations

import numpy as np
import pytest

from common.evaluation import metrics
from common.evaluation.metrics import RankingMetrics, evaluate_ranking, evaluate_ranking_per_query, same_camera_mask, summarize

# Query pid 1 against six gallery items. Sorted by distance the gallery indices are
# 1 (0.1), 3 (0.2), 2 (0.3), 0 (0.4), 5 (0.5), 4 (0.6), i.e. ranked pids [2, 2, 3, 1, 2, 1].
TOY_G_PIDS = np.array([1, 2, 3, 2, 1, 2])
TOY_DIST = np.array([[0.4, 0.1, 0.3, 0.2, 0.6, 0.5]])
TOY_Q_PIDS = np.array([1])


def reference_metrics(dist, q_pids, g_pids, ignore=None, max_rank=20, collapse=True):
    """The library's readable per-query evaluation (:func:`evaluate_ranking_per_query`), as
    ``(cmc, mean_ap, minp, num_queries)``, or None when no query has a valid match."""
    try:
        m = evaluate_ranking_per_query(dist, q_pids, g_pids, ignore=ignore, max_rank=max_rank, collapse_repeated_ids=collapse)
    except ValueError:
        return None
    return m.cmc, m.mean_ap, m.minp, m.num_queries


@pytest.mark.parametrize("evaluate", [evaluate_ranking, evaluate_ranking_per_query], ids=["engine", "per-query"])
def test_toy_ranking_hand_worked(evaluate):
    # Ranked pids [2, 2, 3, 1, 2, 1]: true matches at ranks 4 and 6.
    # AP = (1/2) * (1/4 + 2/6) = 7/24; mINP = R / last rank = 2/6 = 1/3.
    # Uncollapsed CMC: first hit at rank 4. Collapsed list [2, 3, 1]: hit at rank 3.
    collapsed = evaluate(TOY_DIST, TOY_Q_PIDS, TOY_G_PIDS, max_rank=6)
    plain = evaluate(TOY_DIST, TOY_Q_PIDS, TOY_G_PIDS, max_rank=6, collapse_repeated_ids=False)
    assert collapsed.mean_ap == pytest.approx(7 / 24, abs=1e-15)
    assert collapsed.minp == pytest.approx(1 / 3, abs=1e-15)
    np.testing.assert_array_equal(collapsed.cmc, [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(plain.cmc, [0, 0, 0, 1, 1, 1])
    assert plain.mean_ap == collapsed.mean_ap and plain.minp == collapsed.minp  # never collapsed
    assert collapsed.num_queries == 1


def test_brief_example_b_a_b_a_c():
    # Ranked pids [b, a, b, a, c] for query a: AP = (1/2)(1/2 + 2/4) = 0.5, mINP = 2/4,
    # Rank-1 = 0 and Rank-2 = 1, with or without collapse (collapsed list [b, a, c]).
    g_pids = np.array([20, 10, 20, 10, 30])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    for collapse in (True, False):
        result = evaluate_ranking(
            dist, np.array([10]), g_pids, max_rank=5, collapse_repeated_ids=collapse
        )
        assert result.mean_ap == pytest.approx(0.5) and result.minp == pytest.approx(0.5)
        assert result.rank1 == 0.0 and result.rank(2) == 1.0


def test_ignore_removes_items_before_ranking():
    # Removing the two top pid-2 items (gallery 1 and 3) leaves ranked pids [3, 1, 2, 1]:
    # matches at ranks 2 and 4, AP = (1/2)(1/2 + 2/4) = 1/2, mINP = 2/4; collapsed [3, 1, 2].
    ignore = np.zeros_like(TOY_DIST, dtype=bool)
    ignore[0, [1, 3]] = True
    result = evaluate_ranking(TOY_DIST, TOY_Q_PIDS, TOY_G_PIDS, ignore=ignore, max_rank=4)
    assert result.mean_ap == pytest.approx(0.5) and result.minp == pytest.approx(0.5)
    np.testing.assert_array_equal(result.cmc, [0, 1, 1, 1])

    # Removing the first true match (gallery 0) leaves [2, 2, 3, 2, 1]: one match, at rank 5
    # (the removed item neither hits nor holds rank 4). AP = mINP = 1/5; collapsed [2, 3, 1].
    ignore = np.zeros_like(TOY_DIST, dtype=bool)
    ignore[0, 0] = True
    result = evaluate_ranking(TOY_DIST, TOY_Q_PIDS, TOY_G_PIDS, ignore=ignore, max_rank=5)
    assert result.mean_ap == pytest.approx(0.2) and result.minp == pytest.approx(0.2)
    np.testing.assert_array_equal(result.cmc, [0, 0, 1, 1, 1])
    plain = evaluate_ranking(
        TOY_DIST, TOY_Q_PIDS, TOY_G_PIDS, ignore=ignore, max_rank=5, collapse_repeated_ids=False
    )
    np.testing.assert_array_equal(plain.cmc, [0, 0, 0, 0, 1])


def test_queries_without_valid_match_are_skipped():
    # q0 (pid 1) ranks its match first: AP = mINP = Rank-1 = 1.
    # q1 (pid 9) has no gallery match; q2 (pid 3) has one, but it is ignored.
    g_pids = np.array([1, 2, 3])
    dist = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    ignore = np.zeros((3, 3), dtype=bool)
    ignore[2, 2] = True
    result = evaluate_ranking(dist, np.array([1, 9, 3]), g_pids, ignore=ignore, max_rank=3)
    assert result.num_queries == 1
    assert result.mean_ap == 1.0 and result.minp == 1.0
    np.testing.assert_array_equal(result.cmc, [1, 1, 1])


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="no query"):
        evaluate_ranking(np.zeros((2, 3)), np.array([7, 8]), np.array([1, 2, 3]))


def test_ties_are_broken_by_gallery_index():
    # All distances equal: the ranking is the gallery order [2, 1, 1] -> matches at 2 and 3.
    # AP = (1/2)(1/2 + 2/3) = 7/12, mINP = 2/3, Rank-1 = 0, Rank-2 = 1.
    result = evaluate_ranking(np.zeros((1, 3)), np.array([1]), np.array([2, 1, 1]), max_rank=3)
    assert result.mean_ap == pytest.approx(7 / 12) and result.minp == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result.cmc, [0, 1, 1])


def test_short_gallery_pads_cmc_with_last_value():
    result = evaluate_ranking(np.array([[0.2, 0.1]]), np.array([5]), np.array([5, 6]), max_rank=20)
    assert result.cmc.shape == (20,) and result.cmc.dtype == np.float64
    np.testing.assert_array_equal(result.cmc, [0.0] + [1.0] * 19)
    assert result.rank20 == 1.0


def test_infinite_distances_rank_last_and_first():
    # +inf goes last, -inf first: ranking [pid 1 (-inf), pid 2 (0.5), pid 1 (+inf)].
    result = evaluate_ranking(
        np.array([[np.inf, 0.5, -np.inf]]), np.array([1]), np.array([1, 2, 1]), max_rank=3
    )
    assert result.mean_ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    np.testing.assert_array_equal(result.cmc, [1, 1, 1])


@pytest.mark.parametrize("collapse", [True, False])
@pytest.mark.parametrize(
    "lower_path", ["sparse", "padded-min", "reduceat-min"]
)
@pytest.mark.parametrize(
    "max_bins, chunk_elements, pairs_per_cell, workers",
    [(4096, 1 << 19, 2, 1), (3, 37, 2, 2), (1, 50, 0, 1), (2, 1, 2, 2)],
    ids=["default", "few-bins-small-chunks-2-threads", "one-bin-sorted-path", "one-row-chunks-2-threads"],
)
def test_agrees_with_per_query_reference(
    monkeypatch, collapse, lower_path, max_bins, chunk_elements, pairs_per_cell, workers
):
    # Few bins force many items into a match's bin; pairs_per_cell = 0 forces the sort path;
    # `lower_path` picks how the collapsed CMC finds the identities ahead of the first
    # match (marking the items of lower bins, or a per-identity minimum in either layout);
    # `workers` scans the chunks in two threads.
    monkeypatch.setattr(metrics, "_MAX_BINS", max_bins)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(metrics, "_PAIRS_PER_CELL", pairs_per_cell)
    monkeypatch.setattr(metrics, "_SPARSE_LOWER_DIVISOR", 0 if lower_path == "sparse" else 10**9)
    monkeypatch.setattr(metrics, "_PADDED_MIN_BELOW", 10**9 if lower_path == "padded-min" else 0)
    monkeypatch.setattr(metrics, "_PADDED_MAX_OVERHEAD", 10**9)
    monkeypatch.setattr(metrics, "_MAX_WORKERS", workers)
    monkeypatch.setattr(metrics, "_available_cpus", lambda: 2)
    rng = np.random.default_rng(0)
    for trial in range(20):
        num_q, num_g = int(rng.integers(1, 30)), int(rng.integers(1, 50))
        q_pids = rng.integers(0, 8, num_q)  # some query ids absent from the gallery
        g_pids = rng.integers(0, 6, num_g)
        if trial % 2:
            g_pids = np.sort(g_pids)  # gallery grouped by identity, as the SYSU draw gives
        dist = np.round(rng.normal(size=(num_q, num_g)), int(rng.integers(0, 3)))  # many ties
        dist[rng.random(dist.shape) < 0.05] = np.inf
        ignore = rng.random(dist.shape) < 0.3
        max_rank = int(rng.integers(1, 25))
        expected = reference_metrics(dist, q_pids, g_pids, ignore, max_rank, collapse)
        if expected is None:
            with pytest.raises(ValueError):
                evaluate_ranking(dist, q_pids, g_pids, ignore=ignore, max_rank=max_rank,
                                 collapse_repeated_ids=collapse)
            continue
        got = evaluate_ranking(dist, q_pids, g_pids, ignore=ignore, max_rank=max_rank,
                               collapse_repeated_ids=collapse)
        np.testing.assert_allclose(got.cmc, expected[0], rtol=0, atol=1e-12)
        assert got.mean_ap == pytest.approx(expected[1], abs=1e-12)
        assert got.minp == pytest.approx(expected[2], abs=1e-12)
        assert got.num_queries == expected[3]


def test_float32_and_integer_distances():
    rng = np.random.default_rng(1)
    dist = rng.integers(0, 5, size=(12, 15))
    q_pids, g_pids = rng.integers(0, 3, 12), rng.integers(0, 3, 15)
    expected = reference_metrics(dist.astype(np.float64), q_pids, g_pids, max_rank=10)
    for d in (dist, dist.astype(np.float32)):
        got = evaluate_ranking(d, q_pids, g_pids, max_rank=10)
        np.testing.assert_allclose(got.cmc, expected[0], atol=1e-12)
        assert got.mean_ap == pytest.approx(expected[1], abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dist": np.array([[np.nan, 0.1]])}, "NaN"),
        ({"dist": np.zeros(2)}, "2-D"),
        ({"dist": np.zeros((1, 3))}, "g_pids"),
        ({"q_pids": np.array([1, 2])}, "q_pids"),
        ({"q_pids": np.array([1.0])}, "integers"),
        ({"ignore": np.zeros((1, 3), dtype=bool)}, "ignore"),
        ({"ignore": np.zeros((1, 2))}, "bool"),
        ({"max_rank": 0}, "max_rank"),
        ({"dist": np.array([[1 + 0j, 0]])}, "real"),
    ],
)
def test_invalid_inputs_raise_value_error(kwargs, message):
    args = {"dist": np.array([[0.2, 0.1]]), "q_pids": np.array([1]), "g_pids": np.array([1, 2])}
    args.update(kwargs)
    ignore = args.pop("ignore", None)
    max_rank = args.pop("max_rank", 20)
    with pytest.raises(ValueError, match=message):
        evaluate_ranking(args["dist"], args["q_pids"], args["g_pids"], ignore=ignore, max_rank=max_rank)


def test_same_camera_mask():
    mask = same_camera_mask(np.array([1, 2]), np.array([1, 1, 2]), np.array([3, 3]), np.array([3, 1, 3]))
    np.testing.assert_array_equal(mask, [[True, False, False], [False, False, True]])
    # Against the broadcast definition, with repeated (identity, camera) gallery pairs,
    # query pairs absent from the gallery, and empty sides.
    rng = np.random.default_rng(5)
    q_pids, q_cams = rng.integers(0, 6, 50), rng.integers(1, 4, 50)
    g_pids, g_cams = rng.integers(0, 5, 40), rng.integers(1, 4, 40)
    expected = (q_pids[:, None] == g_pids) & (q_cams[:, None] == g_cams)
    np.testing.assert_array_equal(same_camera_mask(q_pids, g_pids, q_cams, g_cams), expected)
    assert same_camera_mask(q_pids[:0], g_pids, q_cams[:0], g_cams).shape == (0, 40)
    assert same_camera_mask(q_pids, g_pids[:0], q_cams, g_cams[:0]).shape == (50, 0)


def test_thread_count_does_not_change_the_result(monkeypatch):
    # Many small chunks scanned by one or two threads: bit-identical sums (chunk order).
    rng = np.random.default_rng(7)
    dist = rng.normal(size=(300, 90))
    q_pids, g_pids = rng.integers(0, 20, 300), rng.integers(0, 20, 90)
    ignore = rng.random(dist.shape) < 0.1
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 900)  # 10 rows per chunk
    monkeypatch.setattr(metrics, "_available_cpus", lambda: 2)
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(metrics, "_MAX_WORKERS", workers)
        results.append(evaluate_ranking(dist, q_pids, g_pids, ignore=ignore))
    one, two = results
    assert one.mean_ap == two.mean_ap and one.minp == two.minp
    np.testing.assert_array_equal(one.cmc, two.cmc)
    expected = reference_metrics(dist, q_pids, g_pids, ignore)
    assert one.mean_ap == pytest.approx(expected[1], abs=1e-12)
    monkeypatch.setattr(metrics, "_MAX_WORKERS", 2)
    with pytest.raises(ValueError, match="NaN"):  # errors inside a thread reach the caller
        bad = dist.copy()
        bad[250, 3] = np.nan
        evaluate_ranking(bad, q_pids, g_pids)


def test_ranking_metrics_properties():
    result = RankingMetrics(cmc=np.linspace(0.05, 1.0, 20), mean_ap=0.5, minp=0.25, num_queries=3)
    assert result.rank1 == pytest.approx(0.05) and result.rank5 == pytest.approx(0.25)
    assert result.rank10 == pytest.approx(0.5) and result.rank20 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        result.rank(21)
    with pytest.raises(ValueError):
        result.cmc[0] = 1.0  # read-only
    short = RankingMetrics(cmc=np.ones(5), mean_ap=1.0, minp=1.0, num_queries=1)
    with pytest.raises(ValueError):
        short.rank10


def test_summarize_percent_mean_and_population_std():
    # rank1 0.5 and 0.7 -> mean 60 %, std 10 % (population: sqrt(((50-60)^2 + (70-60)^2)/2)).
    cmc_a = np.full(20, 0.9)
    cmc_a[:5] = 0.5
    cmc_b = np.full(20, 1.0)
    cmc_b[:5] = 0.7
    trials = [
        RankingMetrics(cmc=cmc_a, mean_ap=0.4, minp=0.2, num_queries=10),
        RankingMetrics(cmc=cmc_b, mean_ap=0.6, minp=0.3, num_queries=10),
    ]
    summary = summarize(trials)
    assert summary["rank1"] == {"mean": pytest.approx(60.0), "std": pytest.approx(10.0)}
    assert summary["rank5"]["mean"] == pytest.approx(60.0)
    assert summary["rank10"] == {"mean": pytest.approx(95.0), "std": pytest.approx(5.0)}
    assert summary["rank20"] == {"mean": pytest.approx(95.0), "std": pytest.approx(5.0)}  # 90 % and 100 %
    assert summary["mean_ap"] == {"mean": pytest.approx(50.0), "std": pytest.approx(10.0)}
    assert summary["minp"] == {"mean": pytest.approx(25.0), "std": pytest.approx(5.0)}
    assert summary["trials"][1] == {
        "rank1": pytest.approx(70.0), "rank5": pytest.approx(70.0), "rank10": pytest.approx(100.0),
        "rank20": pytest.approx(100.0), "mean_ap": pytest.approx(60.0), "minp": pytest.approx(30.0),
        "num_queries": 10,
    }
    with pytest.raises(ValueError):
        summarize([])


def test_per_query_average_precision_worked_example_and_agrees_with_map():
    from common.evaluation.metrics import evaluate_ranking, per_query_average_precision

    # query 0 (pid 1): ranked gallery pids 1, 2, 1, 3 -> hits at ranks 1 and 3: AP = (1/1 + 2/3) / 2 = 0.833333
    # query 1 (pid 2): ranked gallery 0, 3, 2, 1 = pids 1, 3, 1, 2 (its only match last) -> AP = 1/4;
    #   with the first-ranked item ignored: pids 3, 1, 2 -> AP = 1/3
    # query 2 (pid 9): no match -> NaN
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.4, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4]])
    g_pids = np.array([1, 2, 1, 3])
    q_pids = np.array([1, 2, 9])
    ap = per_query_average_precision(dist, q_pids, g_pids)
    assert ap[0] == pytest.approx(5 / 6) and ap[1] == pytest.approx(1 / 4) and np.isnan(ap[2])
    ignore = np.zeros_like(dist, dtype=bool)
    ignore[1, 0] = True  # query 1's first-ranked item
    assert per_query_average_precision(dist, q_pids, g_pids, ignore=ignore)[1] == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    d = rng.random((30, 40))
    qp, gp = rng.integers(0, 6, 30), rng.integers(0, 6, 40)
    ign = rng.random((30, 40)) < 0.2
    ap = per_query_average_precision(d, qp, gp, ignore=ign)
    assert np.nanmean(ap) == pytest.approx(evaluate_ranking(d, qp, gp, ignore=ign).mean_ap, abs=1e-12)
