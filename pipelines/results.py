"""Test results: the table in the papers' words, pooling per-split models, the best-on-test entry.

A results dict is what :func:`pipelines.stages.test_stage` returns and ``results.json``
holds: per-trial figures and their mean/std (percent), plus what was tested and how.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mean_ap", "minp")
LAST_EPOCH = "last epoch"
#: k-reciprocal re-ranking defaults (Zhong et al., CVPR 2017, and the authors' code); TSME's
#: testreranking.py uses k1 31, k2 19, lambda 0.3.
DEFAULT_RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}
BEST_ON_TEST = "best test-set Rank-1 during training (optimistic: chosen on the test set, as AGW and TSME report)"


def attach_best_on_test(results: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any]:
    """Put the best-on-test figures under ``results["best_on_test"]`` (metrics, epoch, note)."""
    if best is not None:
        results["best_on_test"] = {**{k: best[k] for k in METRIC_KEYS}, "epoch": best.get("epoch"), "checkpoint": best.get("checkpoint"),
                                   "selection": BEST_ON_TEST, **({"splits": best["splits"]} if "splits" in best else {})}
    return results


def combine_trials(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A dataset of several splits (RegDB): one result per trained model -> mean +/- std over the splits.

    Each input's per-trial figures are pooled (population std, as
    :func:`common.metrics.summarize`); identity fields are listed per split.
    """
    keys = METRIC_KEYS
    trials = [t for r in results for t in r["trials"]]
    combined = {k: {"mean": float(np.mean([t[k] for t in trials])), "std": float(np.std([t[k] for t in trials]))} for k in keys}
    first = results[0]
    return {
        **{k: first[k] for k in ("dataset", "data_root", "method", "direction", "feature", "flip", "mode", "shots", "device", "reranked")},
        "protocol": first["protocol"].replace("1 trial", f"{len(results)} trials"),
        "num_trials": len(trials), "num_query": first["num_query"], "trials": trials,
        "splits": [{k: r[k] for k in ("split", "checkpoint", "checkpoint_sha256", "dataset_fingerprint") if k in r} for r in results],
        **combined,
    }


def format_results(results: dict[str, Any], title: str | None = None) -> str:
    """A results table in the papers' words (Rank-k, mAP, mINP as mean +/- std, percent)."""
    head = title or results["protocol"]
    cols = [("Rank-1", "rank1"), ("Rank-5", "rank5"), ("Rank-10", "rank10"), ("Rank-20", "rank20"), ("mAP", "mean_ap"), ("mINP", "minp")]
    top = "  ".join(f"{c:>13}" for c, _ in cols)

    def row(r: dict[str, Any]) -> str:
        return "  ".join(f"{r[k]['mean']:6.2f} ± {r[k]['std']:4.2f}" for _, k in cols)

    rr = ", re-ranked" if results.get("reranked") else ""
    label = lambda r, what: f"{what}{rr}" + (f" (epoch {r['epoch']})" if r.get("epoch") else "")
    width = 40
    lines = [head, f"{'':<{width}}{top}", f"{label(results, 'last epoch'):<{width}}{row(results)}"]
    best = results.get("best_on_test")
    if best is not None:
        lines.append(f"{label(best, 'best on test, optimistic'):<{width}}{row(best)}")
    extra = results.get("with_reranking")
    if extra is not None:
        p = extra["params"]
        lines.append(f"{'last epoch, re-ranked (k1 %d, k2 %d, λ %.2g)' % (p['k1'], p['k2'], p['lambda_value']):<{width}}{row(extra)}")
    if rr:
        p = results["reranked"]
        lines.append(f"re-ranked: k-reciprocal (Zhong et al., CVPR 2017), k1 {p['k1']}, k2 {p['k2']}, lambda {p['lambda_value']}")
    return "\n".join(lines)
