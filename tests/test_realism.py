"""The classifier two-sample test of stage 1: a perfect copy scores 0.5, a constant image
about 1.0, a subtle but learnable change in between; seeded; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage1_dsgan.realism import _binomial_tail, _roc_auc, split_for_score, two_sample_score


def _textured(n: int, seed: int, size=(48, 24)) -> np.ndarray:
    """uint8 (n, H, W, 3) gray images: smooth random blobs plus fine noise, like IR crops."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w), np.float64)
    for i in range(n):
        img = np.zeros((h, w))
        for _ in range(4):
            cy, cx, r, a = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 10), rng.uniform(60, 160)
            img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out[i] = img + rng.normal(0, 8, size=(h, w))
    gray = np.clip(out + 40, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def test_a_perfect_copy_is_indistinguishable():
    real = _textured(120, 0)
    same = two_sample_score(real, real.copy(), seed=0)
    # identical images get identical scores: exactly one of each (real, copy) pair is right
    assert same["accuracy"] == pytest.approx(0.5) and same["auc"] == pytest.approx(0.5)
    fresh = two_sample_score(real, _textured(120, 1), seed=0)  # new draws of the same distribution
    assert abs(fresh["accuracy"] - 0.5) <= 0.15, fresh
    assert fresh["n_test"] == 2 * 36 and fresh["n_train"] == 2 * 84


def test_a_constant_image_is_told_apart_and_a_brightness_shift_is_learnable():
    real = _textured(120, 0)
    constant = np.full_like(real, 128)
    assert two_sample_score(real, constant, seed=0)["accuracy"] >= 0.95
    shifted = np.clip(_textured(120, 2).astype(int) + 40, 0, 255).astype(np.uint8)
    score = two_sample_score(real, shifted, seed=0)
    assert score["accuracy"] >= 0.7 and score["p_value"] < 0.01, score


def test_same_seed_same_result_and_callers_rng_untouched():
    real, gen = _textured(40, 0), _textured(40, 5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = two_sample_score(real, gen, seed=3, epochs=3)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global generator is neither used nor changed
    assert a == two_sample_score(real, gen, seed=3, epochs=3)


def test_inputs_of_other_forms_and_bad_input():
    real = _textured(20, 0)
    as_float = torch.from_numpy(real).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W) in [0, 1]
    assert two_sample_score(as_float, as_float[:, :1], seed=0, epochs=1)["accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 8 images"):
        two_sample_score(real[:5], real[:5])
    with pytest.raises(ValueError, match="differ in size"):
        two_sample_score(real, _textured(20, 1, size=(32, 16)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        two_sample_score(as_float * 2, as_float)


def test_helpers_by_hand():
    train, test = split_for_score(10, 0.3, seed=0)
    assert len(test) == 3 and len(train) == 7 and sorted(torch.cat([train, test]).tolist()) == list(range(10))
    # AUC: positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4), (0.9>0.1), (0.4=0.4: 1/2), (0.4>0.1) -> 3.5 / 4
    assert _roc_auc(torch.tensor([0.9, 0.4, 0.4, 0.1]), torch.tensor([True, True, False, False])) == pytest.approx(0.875)
    # P(X >= 3) for X ~ Bin(4, 1/2) = (4 + 1) / 16
    assert _binomial_tail(4, 3) == pytest.approx(5 / 16)
