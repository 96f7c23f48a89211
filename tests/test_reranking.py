"""Tests of common.evaluation.reranking: k-reciprocal re-ranking (Zhong et al., CVPR 2017).

Two worked examples on 1-D features (sets derived by hand in the comments), agreement with
a plain loop transcription of the paper + released code (``_loop_rerank`` below, numpy
only), invariances, and argument checks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from common.evaluation.reranking import k_reciprocal_rerank


def _split(dist: np.ndarray, num_q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_g, q_q, g_g) blocks of a full (N, N) matrix whose first num_q items are queries."""
    return dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:]


def _line_distances(x: list[float]) -> np.ndarray:
    """Euclidean distances |x_i - x_j| of 1-D features."""
    pos = np.asarray(x, dtype=np.float64)
    return np.abs(pos[:, None] - pos[None, :])


def _kernel_row(dists: list[float]) -> np.ndarray:
    """exp(-d) over a set, normalised to sum 1 (paper Eq. 8 + the code's normalisation)."""
    w = np.exp(-np.asarray(dists, dtype=np.float64))
    return w / w.sum()


# ---------------------------------------------------------------------------------------
# 1. Worked examples
# ---------------------------------------------------------------------------------------


def test_hand_worked_two_queries_three_gallery():
    # Features on a line: q0 = 1, q1 = 9, g0 = 0, g1 = 4, g2 = 11 (all pairwise distances
    # differ, so no ties). Items in stacked order: q0 q1 g0 g1 g2. k1 = 2, k2 = 2.
    #
    # Step 1, squared distances (the code squares its input) and their row maxima:
    #   q0: [0, 64,   1,  9, 100] / 100 -> q0 0, q1 .64, g0 .01, g1 .09, g2 1
    #   q1: [64, 0,  81, 25,   4] / 81
    #   g0: [1, 81,   0, 16, 121] / 121
    #   g1: [9, 25,  16,  0,  49] / 49
    #   g2: [100, 4, 121, 49,  0] / 121
    # Ranking lists, first k1 + 1 = 3 entries (N(p, 2), self included):
    #   q0: q0 g0 g1 | q1: q1 g2 g1 | g0: g0 q0 g1 | g1: g1 q0 g0 | g2: g2 q1 g1
    # R(p, 2) = members whose own list holds p:
    #   R(q0) = {q0, g0, g1}; R(q1) = {q1, g2} (g1 is in q1's list, but q1 is not in g1's);
    #   R(g0) = R(g1) = {q0, g0, g1}; R(g2) = {q1, g2}.
    # Expansion with round(2/2) = 1 (lists of 2): R(q0,1) = {q0,g0}, R(g0,1) = {g0,q0},
    # R(g1,1) = {g1} (g1's nearest q0 has g0 first), R(q1,1) = R(g2,1) = {q1,g2}. Each lies
    # inside the set it would expand, so R* = R everywhere.
    # Step 5, V (exp(-d), rows normalised), on columns (q0, g0, g1) or (q1, g2):
    #   V[q0] = norm(exp(-[0, .01, .09]))        = [.34435, .34093, .31472]
    #   V[g0] = norm(exp(-[1, 0, 16] / 121))     = [.34582, .34869, .30550]
    #   V[g1] = norm(exp(-[9, 16, 0] / 49))      = [.32589, .28251, .39160]
    #   V[q1] = norm(exp(-[0, 4/81])), V[g2] = norm(exp(-[4/121, 0]))  on (q1, g2)
    # Step 6, k2 = 2: average a row with its nearest other item (2nd list entry):
    #   q0 <- (V[q0] + V[g0]) / 2 = g0 <- (V[g0] + V[q0]) / 2: identical rows, d_J(q0,g0) = 0
    #   q1 <- (V[q1] + V[g2]) / 2 = g2 <- (V[g2] + V[q1]) / 2: identical, d_J(q1,g2) = 0
    #   g1 <- (V[g1] + V[q0]) / 2
    # Step 7: q0-g2, q1-g0, q1-g1 share no column: d_J = 1. q0-g1: s = sum of minima of
    #   [.34509, .34481, .31011] and [.33512, .31172, .35316] = .95695, d_J = 1 - s/(2-s)
    #   = .08255.
    # Step 8, lambda = 0.3: 0.7 d_J + 0.3 d:
    #   q0: g0 0.3 * .01 = .003, g1 0.7 * .08255 + 0.3 * .09 = .08478, g2 0.7 + 0.3 * 1 = 1
    #   q1: g0 0.7 + 0.3 * 1 = 1, g1 0.7 + 0.3 * 25/81 = .79259, g2 0.3 * 4/81 = .01481
    q_g, q_q, g_g = _split(_line_distances([1, 9, 0, 4, 11]), 2)

    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=2, k2=2, lambda_value=0.3)

    v_q0 = _kernel_row([0, 0.01, 0.09])
    v_g0 = _kernel_row([1 / 121, 0, 16 / 121])
    v_g1 = _kernel_row([9 / 49, 16 / 49, 0])
    np.testing.assert_allclose(v_q0, [0.34435, 0.34093, 0.31472], atol=1e-5)
    s = np.minimum((v_q0 + v_g0) / 2, (v_g1 + v_q0) / 2).sum()
    assert s == pytest.approx(0.95695, abs=1e-5)
    jac_q0_g1 = 1 - s / (2 - s)
    expected = np.array(
        [
            [0.3 * 0.01, 0.7 * jac_q0_g1 + 0.3 * 0.09, 1.0],
            [1.0, 0.7 + 0.3 * 25 / 81, 0.3 * 4 / 81],
        ]
    )
    assert out.shape == (2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.08478, atol=1e-5)


def test_hand_worked_expansion_and_two_thirds_rule():
    # q0 = 0, q1 = 3; g0 = 45, g1 = 65, g2 = 76, g3 = 91, g4 = 92, g5 = 100 (distinct
    # pairwise distances). k1 = 6, so N(p, 6) = the first 7 of 8 entries: everything but
    # p's farthest item. Farthest: q0, q1, g0 -> g5; g1, g2, g3, g4, g5 -> q0.
    # R(p, 6) = all items except p's farthest and those whose farthest is p:
    #   R(q0) = {q0, q1, g0}                       (g5 is q0's farthest; q0 is g1..g5's)
    #   R(q1) = R(g0) = all but g5
    #   R(g1) = R(g2) = R(g3) = R(g4) = all but q0
    #   R(g5) = {g1, g2, g3, g4, g5}              (g5 is the farthest of q0, q1, g0)
    # round(6 / 2) = 3: lists of 4 entries:
    #   q0: q0 q1 g0 g1 | q1: q1 q0 g0 g1 | g0: g0 g1 g2 q1 | g1: g1 g2 g0 g3
    #   g2: g2 g1 g3 g4 | g3: g3 g4 g5 g2 | g4: g4 g3 g5 g2 | g5: g5 g4 g3 g2
    # R(c, 3):
    #   R(q0,3) = {q0, q1}          R(q1,3) = {q1, q0, g0}     R(g0,3) = {g0, g1, q1}
    #   R(g1,3) = {g1, g2, g0}      R(g2,3) = {g2, g1, g3, g4} R(g3,3) = {g3, g4, g5, g2}
    #   R(g4,3) = {g4, g3, g5, g2}  R(g5,3) = {g5, g4, g3}
    # Eq. 5 (code: overlap > 2/3 |R(c,3)|, i.e. 3 * overlap > 2 * size):
    #   q0: candidate g0: R(g0,3) & R(q0) = {g0, q1}: 2 of 3, 6 > 6 is false -> g1 NOT
    #       added (">=" would add it). q1, q0 add nothing new. R*(q0) = {q0, q1, g0}.
    #   q1 (and g0): candidate g3: {g3, g4, g2} of {g3, g4, g5, g2}: 9 > 8 -> g5 added.
    #       R*(q1) = R*(g0) = all 8 items.
    #   g1..g4: candidate q1: {q1, g0} of {q1, q0, g0}: 6 > 6 false -> q0 not added;
    #       R* = all but q0.
    #   g5: candidate g1: {g1, g2} of {g1, g2, g0}: 6 > 6 false -> g0 not added;
    #       R*(g5) = {g1, g2, g3, g4, g5}.
    # With k2 = 1 (no query expansion) and lambda = 0 the output is the Jaccard distance
    # of these sets under the kernel weights; lambda = 0.3 adds 0.3 d.
    x = [0, 3, 45, 65, 76, 91, 92, 100]
    dist = _line_distances(x)
    sq = dist**2
    d = sq / sq.max(axis=1, keepdims=True)  # symmetric: row max = column max
    all_items = list(range(8))
    r_star = {
        0: [0, 1, 2],
        1: all_items,
        2: all_items,
        3: all_items[1:],
        4: all_items[1:],
        5: all_items[1:],
        6: all_items[1:],
        7: [3, 4, 5, 6, 7],
    }
    v = np.zeros((8, 8))
    for p, members in r_star.items():
        v[p, members] = _kernel_row(list(d[p, members]))
    jac = np.array(
        [
            [1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum() for g in range(2, 8)]
            for p in (0, 1)
        ]
    )
    q_g, q_q, g_g = _split(dist, 2)

    out0 = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=1, lambda_value=0.0)
    out3 = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=1, lambda_value=0.3)

    np.testing.assert_allclose(out0, jac, atol=1e-6)
    np.testing.assert_allclose(out3, 0.7 * jac + 0.3 * d[:2, 2:], atol=1e-6)
    # q0 and g5 share no member: d_J = 1 exactly.
    assert out0[0, 5] == pytest.approx(1.0, abs=1e-7)


# ---------------------------------------------------------------------------------------
# 2. Agreement with a loop transcription
# ---------------------------------------------------------------------------------------


def _loop_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    """Per-row reading of paper Sec. 3 and the released ``re_ranking``, float64 after step 1.

    Step 1 as the code: stack, square, float32, divide by the column maximum, transpose.
    Ranking lists by stable argsort. N(p, k) = first k + 1 entries; R(p, k) by direct
    membership tests; R* by the 2/3 rule with round-half-even k1/2; V = exp(-d) on R*,
    normalised; query expansion = mean of V over the first k2 entries (skipped for k2 = 1);
    Jaccard as sum(min) / sum(max) (paper Eq. 10); blend on query rows x gallery columns.
    """
    num_q, num_g = q_g.shape
    n = num_q + num_g
    stacked = np.block([[q_q, q_g], [q_g.T, g_g]])
    squared = np.square(stacked).astype(np.float32)
    d = (squared / squared.max(axis=0)).T
    order = np.argsort(d, axis=1, kind="stable")

    def neighbours(i, k):
        return list(order[i, : k + 1])

    def reciprocal(i, k):
        return [j for j in neighbours(i, k) if i in neighbours(j, k)]

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            r_c = reciprocal(c, half)
            if len(set(r_c) & set(r)) > 2 / 3 * len(r_c):
                expanded |= set(r_c)
        members = sorted(expanded)
        w = np.exp(-d[i, members].astype(np.float64))
        v[i, members] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[order[i, :k2]].mean(axis=0) for i in range(n)])
    out = np.empty((num_q, num_g))
    for p in range(num_q):
        for g in range(num_g):
            a, b = v[p], v[num_q + g]
            jac = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[p, g] = (1 - lambda_value) * jac + lambda_value * d[p, num_q + g]
    return out


def _clustered_euclidean(rng, n, dim=8, ids=None, dtype=np.float64):
    """Euclidean distances of L2-normalised features drawn around a few identity centres."""
    ids = max(1, n // 4) if ids is None else ids
    centres = rng.normal(size=(ids, dim))
    feats = centres[rng.integers(0, ids, size=n)] + 0.6 * rng.normal(size=(n, dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return np.linalg.norm(feats[:, None] - feats[None, :], axis=2).astype(dtype)


# (num_q, num_g, k1, k2, lambda, kind, chunk). k1 = 3, 5, 7 separate round-half-even from
# floor and ceil; k1 >= N and k2 > N clip; chunk = 1, 3 split every batched step.
_CASES = [
    (2, 3, 1, 1, 0.3, "clustered", 512),
    (3, 9, 3, 2, 0.3, "clustered", 1),
    (6, 10, 5, 3, 0.0, "clustered", 3),
    (7, 12, 7, 6, 0.3, "clustered", 4),
    (10, 14, 4, 6, 0.5, "clustered32", 512),
    (12, 25, 20, 6, 0.3, "clustered", 7),
    (4, 6, 20, 50, 0.3, "clustered", 2),
    (9, 13, 3, 3, 0.3, "asymmetric", 5),
    (8, 15, 5, 1, 0.0, "asymmetric", 512),
    (9, 16, 4, 3, 0.3, "integer_ties", 3),
    (10, 20, 6, 2, 0.0, "integer_ties", 512),
    (6, 12, 3, 1, 0.0, "zero_ties", 512),
    (6, 12, 3, 2, 0.3, "zero_ties", 2),
]


@pytest.mark.parametrize(("num_q", "num_g", "k1", "k2", "lambda_value", "kind", "chunk"), _CASES)
def test_matches_loop_transcription(num_q, num_g, k1, k2, lambda_value, kind, chunk):
    rng = np.random.default_rng(num_q * 1000 + num_g * 10 + k1)
    n = num_q + num_g
    if kind == "clustered":
        dist = _clustered_euclidean(rng, n)
    elif kind == "clustered32":
        dist = _clustered_euclidean(rng, n, dtype=np.float32)
    elif kind == "asymmetric":  # zero diagonal, otherwise unrelated entries: exercises the
        dist = rng.random((n, n))  # code's column-max normalisation and transpose
        np.fill_diagonal(dist, 0.0)
    elif kind == "integer_ties":  # distinct integer positions on a line: many equal
        dist = _line_distances(list(rng.choice(3 * n, size=n, replace=False)))  # distances
    else:  # symmetric, with zeros off the diagonal: an item whose list starts with a
        dist = rng.random((n, n)) + 0.1  # lower-index item at distance 0, not itself
        dist = (dist + dist.T) / 2  # (then k2 = 1, which the code skips, differs from
        np.fill_diagonal(dist, 0.0)  # averaging over N(p, 1))
        for i, j in ((1, 0), (num_q + 3, 2), (num_q + 5, num_q + 4)):
            dist[i, j] = dist[j, i] = 0.0
    q_g, q_q, g_g = _split(dist, num_q)

    out = k_reciprocal_rerank(q_g, q_q, g_g, k1, k2, lambda_value, chunk=chunk)

    assert out.shape == (num_q, num_g) and out.dtype == np.float32
    expected = _loop_rerank(q_g, q_q, g_g, k1, k2, lambda_value)
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_query_expansion_and_lambda_change_the_result():
    # Guards the parametrised cases against being insensitive: on the same inputs, k2 and
    # lambda each move the output by far more than the tolerance.
    rng = np.random.default_rng(3)
    q_g, q_q, g_g = _split(_clustered_euclidean(rng, 24), 8)
    base = k_reciprocal_rerank(q_g, q_q, g_g, 5, 1, 0.3)
    assert np.abs(k_reciprocal_rerank(q_g, q_q, g_g, 5, 3, 0.3) - base).max() > 1e-2
    assert np.abs(k_reciprocal_rerank(q_g, q_q, g_g, 5, 1, 0.6) - base).max() > 1e-2
    assert np.abs(k_reciprocal_rerank(q_g, q_q, g_g, 7, 1, 0.3) - base).max() > 1e-2


# ---------------------------------------------------------------------------------------
# 3. lambda = 1 and invariances
# ---------------------------------------------------------------------------------------


def test_lambda_one_returns_the_normalised_original_distance():
    # d[p, g] = q_g[p, g]^2 / max(max_k q_q[k, p]^2, max_g' q_g[p, g']^2) (column maxima of
    # the stacked matrix, row p after the transpose): same ranking as q_g per query.
    rng = np.random.default_rng(7)
    dist = rng.random((14, 14)) + 0.1
    np.fill_diagonal(dist, 0.0)
    q_g, q_q, g_g = _split(dist, 5)
    squared = np.square(q_g).astype(np.float32)
    col_max = np.maximum(np.square(q_q).astype(np.float32).max(axis=0), squared.max(axis=1))

    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=4, k2=3, lambda_value=1.0)

    np.testing.assert_array_equal(out, squared / col_max[:, None])
    np.testing.assert_array_equal(
        np.argsort(out, axis=1, kind="stable"), np.argsort(q_g, axis=1, kind="stable")
    )


def test_permuting_gallery_permutes_columns_and_queries_permute_rows():
    rng = np.random.default_rng(11)
    q_g, q_q, g_g = _split(_clustered_euclidean(rng, 30), 12)
    base = k_reciprocal_rerank(q_g, q_q, g_g, k1=5, k2=3)
    perm_g = rng.permutation(18)
    perm_q = rng.permutation(12)

    by_gallery = k_reciprocal_rerank(q_g[:, perm_g], q_q, g_g[np.ix_(perm_g, perm_g)], k1=5, k2=3)
    by_query = k_reciprocal_rerank(q_g[perm_q], q_q[np.ix_(perm_q, perm_q)], g_g, k1=5, k2=3)

    np.testing.assert_allclose(by_gallery, base[:, perm_g], atol=1e-6)
    np.testing.assert_allclose(by_query, base[perm_q], atol=1e-6)


def test_scaling_all_distances_changes_nothing():
    # Step 1 divides by a maximum: 2x distances give 4x squares and 4x maxima, exactly.
    rng = np.random.default_rng(5)
    q_g, q_q, g_g = _split(_clustered_euclidean(rng, 20), 6)
    base = k_reciprocal_rerank(q_g, q_q, g_g, k1=4, k2=2)
    np.testing.assert_array_equal(k_reciprocal_rerank(2 * q_g, 2 * q_q, 2 * g_g, k1=4, k2=2), base)


def test_chunk_size_does_not_change_the_result():
    rng = np.random.default_rng(9)
    q_g, q_q, g_g = _split(_clustered_euclidean(rng, 24), 9)
    base = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=4, chunk=512)
    for chunk in (1, 5):
        out = k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=4, chunk=chunk)
        np.testing.assert_allclose(out, base, atol=1e-7)


def test_integer_and_read_only_inputs_give_the_float_result():
    # Memory-mapped caches hand out read-only arrays; integer distances are squared as
    # integers (exactly), as np.power would.
    positions = [0, 7, 2, 11, 5, 19, 13]
    q_g, q_q, g_g = _split(_line_distances(positions), 3)
    base = k_reciprocal_rerank(q_g, q_q, g_g, k1=2, k2=2)
    frozen = [a.astype(np.int64) for a in (q_g, q_q, g_g)]
    for a in frozen:
        a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable array" warning
        out = k_reciprocal_rerank(*frozen, k1=2, k2=2, device="cpu")
    np.testing.assert_array_equal(out, base)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(13)
    q_g, q_q, g_g = _split(_clustered_euclidean(rng, 200, dim=16), 80)
    cpu = k_reciprocal_rerank(q_g, q_q, g_g)
    cuda = k_reciprocal_rerank(q_g, q_q, g_g, device="cuda", chunk=64)
    np.testing.assert_allclose(cuda, cpu, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 4. Argument checks
# ---------------------------------------------------------------------------------------


def _ok_inputs():
    q_g, q_q, g_g = _split(_line_distances([1, 9, 0, 4, 11]), 2)
    return q_g, q_q, g_g


@pytest.mark.parametrize(
    ("q_g_shape", "q_q_shape", "g_g_shape"),
    [
        ((2, 3), (3, 3), (3, 3)),
        ((2, 3), (2, 2), (2, 2)),
        ((2, 3), (2, 3), (3, 3)),
        ((2, 3), (2, 2), (3, 2)),
    ],
)
def test_mismatched_shapes_raise_naming_them(q_g_shape, q_q_shape, g_g_shape):
    with pytest.raises(ValueError, match=r"shapes do not fit") as info:
        k_reciprocal_rerank(np.ones(q_g_shape), np.ones(q_q_shape), np.ones(g_g_shape))
    assert str(q_q_shape) in str(info.value) and str(g_g_shape) in str(info.value)


def test_non_2d_and_empty_inputs_raise():
    q_g, q_q, g_g = _ok_inputs()
    with pytest.raises(ValueError, match=r"q_g must be a 2-D .*\(6,\)"):
        k_reciprocal_rerank(q_g.ravel(), q_q, g_g)
    with pytest.raises(ValueError, match=r"g_g must be a 2-D"):
        k_reciprocal_rerank(q_g, q_q, g_g[None])
    with pytest.raises(ValueError, match=r"at least one query and one gallery"):
        k_reciprocal_rerank(np.zeros((0, 3)), np.zeros((0, 0)), g_g)


def test_non_real_dtypes_raise_type_error():
    q_g, q_q, g_g = _ok_inputs()
    with pytest.raises(TypeError, match="bool"):
        k_reciprocal_rerank(q_g > 1, q_q, g_g)
    with pytest.raises(TypeError, match="complex"):
        k_reciprocal_rerank(q_g, q_q.astype(np.complex64), g_g)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k1": 0},
        {"k1": -3},
        {"k1": 2.0},
        {"k1": True},
        {"k2": 0},
        {"lambda_value": -0.01},
        {"lambda_value": 1.01},
        {"lambda_value": math.nan},
        {"lambda_value": "0.3"},
        {"chunk": 0},
    ],
)
def test_bad_parameters_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        k_reciprocal_rerank(*_ok_inputs(), **kwargs)


def test_boundary_parameters_are_accepted():
    q_g, q_q, g_g = _ok_inputs()
    for kwargs in ({"k1": 1, "k2": 1}, {"lambda_value": 0}, {"lambda_value": 1}, {"chunk": 1}):
        assert k_reciprocal_rerank(q_g, q_q, g_g, **kwargs).shape == (2, 3)


def test_non_finite_or_all_zero_distances_raise():
    q_g, q_q, g_g = _ok_inputs()
    bad = q_g.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        k_reciprocal_rerank(bad, q_q, g_g)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        k_reciprocal_rerank(bad, q_q, g_g)
    with pytest.raises(ValueError, match="finite"):  # 1e30 squared overflows float32
        k_reciprocal_rerank(q_g * 1e30, q_q, g_g)
    with pytest.raises(ValueError, match="item 1 .* are zero"):
        zero_q1 = q_g.copy()
        zero_q1[1] = 0.0
        q_q0 = q_q.copy()
        q_q0[:, 1] = 0.0
        k_reciprocal_rerank(zero_q1, q_q0, g_g)
