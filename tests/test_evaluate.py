"""Stage 2 evaluation: features once per image, trials scored by cosine, optional k-reciprocal
re-ranking on the Euclidean distances of the normalised features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.data.array_cache import ArraySplit
from common.evaluation.protocols import Family, ProtocolSpec
from stage2_fusion.evaluate import evaluate_protocol

CPU = torch.device("cpu")


class PixelFeatures(torch.nn.Module):
    """A stand-in model: the feature of an image is its (normalised) pixels."""

    method = "stub"

    def extract(self, inputs, partners=None, feature="post"):
        (x,) = inputs.values()
        return F.normalize(x.flatten(1), dim=1)


def _split(seed: int = 0):
    # 12 identities, 2 visible + 2 infrared images each; an identity's images share a direction
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(12), 4)
    is_ir = np.tile([False, False, True, True], 12)
    base = rng.integers(0, 256, size=(12, 2, 2, 3))
    images = np.clip(base[pids] + rng.normal(0, 60, size=(48, 2, 2, 3)), 0, 255).astype(np.uint8)
    return ArraySplit(images, pids, np.where(is_ir, 2, 1), is_ir, "test")


def test_reranking_with_lambda_one_keeps_the_ranking_and_lambda_below_one_changes_it():
    split, model = _split(), PixelFeatures()
    spec = ProtocolSpec(Family.REGDB, direction="v2i")
    plain = evaluate_protocol(model, split, CPU, spec, show_progress=False)
    kept = evaluate_protocol(model, split, CPU, spec, show_progress=False, rerank={"k1": 4, "k2": 2, "lambda_value": 1.0})
    changed = evaluate_protocol(model, split, CPU, spec, show_progress=False, rerank={"k1": 4, "k2": 2, "lambda_value": 0.0})
    assert plain["reranked"] is False and kept["reranked"] == {"k1": 4, "k2": 2, "lambda_value": 1.0}
    # lambda = 1: the re-ranked distance is the squared Euclidean one over its row maximum, a
    # monotone function of the cosine: every query's ranking, hence every metric, is unchanged
    for k in ("rank1", "rank5", "mean_ap", "minp"):
        assert kept[k]["mean"] == pytest.approx(plain[k]["mean"], abs=1e-9), k
    # lambda = 0: the pure Jaccard distance of the k-reciprocal sets ranks differently
    assert any(abs(changed[k]["mean"] - plain[k]["mean"]) > 1e-6 for k in ("rank1", "mean_ap", "minp"))
    assert plain["num_query"] == 24 and plain["num_trials"] == 1


def test_features_are_extracted_in_float32_unless_asked(monkeypatch):
    """The references test in float32 (MSCMNet too, though it trains in fp16): eval.amp = false
    by default, and evaluation turns autocast on only when asked."""
    import stage2_fusion.evaluate as evaluate
    from stage2_fusion.methods import load_config

    asked = []
    real = evaluate.autocast
    monkeypatch.setattr(evaluate, "autocast", lambda device, enabled, *a: asked.append(enabled) or real(device, enabled, *a))
    split, model = _split(), PixelFeatures()
    spec = ProtocolSpec(Family.REGDB, direction="v2i")
    evaluate_protocol(model, split, CPU, spec, show_progress=False)
    assert asked and not any(asked)
    asked.clear()
    evaluate_protocol(model, split, CPU, spec, show_progress=False, amp=True)
    assert asked and all(asked)
    assert load_config("paper").eval.amp is False and load_config("demo").eval.amp is False
