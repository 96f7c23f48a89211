"""Looking at results: ``pipeline show-ranks`` (the worst queries and their top-10) and
``pipeline compare`` (runs side by side: what differs in their configs, and their metrics)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import test_feature
from common.errors import UserError
from common.evaluation.metrics import per_query_average_precision
from common.evaluation.protocols import protocol_trials
from pipelines.rank_grid import RankRow, render_rank_grid, save_png
from common.runlog import info
from pipelines.data import Splits
from pipelines.partners import PartnerSource
from pipelines.stages import file_numbers, make_protocol
from stage2_fusion.evaluate import extract_features, load_reid_model
from stage2_fusion.methods import method_spec

TOP_K = 10


def show_ranks(checkpoint: Path, splits: Splits, device: torch.device, out: Path, *, worst: int = 8,
               query_pid: int | None = None, gan_checkpoint: Path | None = None, mode: str | None = None,
               direction: str | None = None) -> dict[str, Any]:
    """The ``worst`` queries of trial 0 by average precision (or the queries of one
    identity), each with its top-10 gallery images, as a PNG grid (and in TensorBoard).

    Distances are cosine distances ``1 - cos`` of the test features (the protocol's
    ranking); gallery items the protocol removes for a query (SYSU-MM01's camera-3 /
    camera-2 rule, LLCM's same-camera rule) are left out of its row.

    Returns:
        ``{"png": path, "rows": [{"query_index", "pid", "cam", "ap", "top": [{"index",
        "pid", "correct", "distance"}, ...]}, ...], "protocol": ...}``.

    Raises:
        UserError: ``worst < 1``; an identity that has no query.
    """
    if worst < 1:
        raise UserError(f"--worst {worst}: show at least 1 query")
    ranking = rank_trial0(checkpoint, splits, device, gan_checkpoint=gan_checkpoint, mode=mode, direction=direction)
    spec, test, trial, ap, masked = ranking.spec, ranking.test, ranking.trial, ranking.ap, ranking.masked
    q_pids, g_pids = ranking.q_pids, ranking.g_pids
    candidates = np.flatnonzero(~np.isnan(ap))
    if query_pid is not None:
        candidates = candidates[q_pids[candidates] == query_pid]
        if candidates.size == 0:
            raise UserError(f"--query {query_pid}: no query of identity {query_pid} with a true match in the gallery; "
                            f"query identities are {sorted(set(q_pids.tolist()))[:10]}...")
    chosen = candidates[np.argsort(ap[candidates], kind="stable")][:worst]  # lowest AP first
    rows, report = [], []
    for qi in chosen:
        top = np.argsort(masked[qi], kind="stable")[:TOP_K]
        top = top[np.isfinite(masked[qi, top])]
        correct = g_pids[top] == q_pids[qi]
        q_index, g_index = int(trial.query[qi]), trial.gallery[top]
        rows.append(RankRow(
            query=np.asarray(test.images[q_index]), query_text=f"q pid {q_pids[qi]} cam {test.cams[q_index]}\nAP {ap[qi]:.3f}",
            gallery=np.asarray(test.images[np.sort(g_index)])[np.argsort(np.argsort(g_index))],
            correct=correct, captions=[f"pid {p} d {d:.2f}" for p, d in zip(g_pids[top], masked[qi, top])],
        ))
        report.append({"query_index": q_index, "pid": int(q_pids[qi]), "cam": int(test.cams[q_index]), "ap": float(ap[qi]),
                       "top": [{"index": int(i), "pid": int(p), "correct": bool(c), "distance": float(d)}
                               for i, p, c, d in zip(g_index, g_pids[top], correct, masked[qi, top])]})
    k = min(len(r.gallery) for r in rows)
    rows = [RankRow(r.query, r.query_text, r.gallery[:k], r.correct[:k], r.captions[:k]) for r in rows]
    what = f"identity {query_pid}" if query_pid is not None else f"the {len(rows)} lowest-AP queries"
    image = render_rank_grid(rows, title=f"{spec.describe()}, trial 0: {what}; green = same identity, red = another; d = 1 - cos")
    save_png(image, out)
    _log_image(checkpoint, image, what)
    info(f"show-ranks: {out} ({what}, top {k})")
    return {"png": str(out), "protocol": spec.describe(), "rows": report}


@dataclass(frozen=True)
class Trial0Ranking:
    """Trial 0 of a checkpoint's test protocol, ranked as the protocol ranks it.

    Fields: ``spec`` (the protocol), ``meta`` (the checkpoint's record), ``test`` (the test
    split), ``trial`` (its query / gallery indices and ``ignore`` mask), ``ap`` (Q,) float
    average precision per query (NaN: no true match in the gallery), ``masked`` (Q, G) float
    cosine distances ``1 - cos`` with the items the protocol removes for a query at +inf,
    ``q_pids`` (Q,) and ``g_pids`` (G,) int identities.
    """

    spec: Any
    meta: dict[str, Any]
    test: Any
    trial: Any
    ap: np.ndarray
    masked: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray


def rank_trial0(checkpoint: Path, splits: Splits, device: torch.device, *, gan_checkpoint: Path | None = None,
                mode: str | None = None, direction: str | None = None) -> Trial0Ranking:
    """Features of trial 0's queries and gallery from ``checkpoint`` (partners from the
    source it records, or ``gan_checkpoint``), their cosine distances and each query's AP.

    Raises:
        UserError: as :func:`stage2_fusion.evaluate.load_reid_model` and the partner source.
    """
    model, meta, cfg = load_reid_model(checkpoint, device)
    spec = make_protocol(cfg.eval, splits.spec, splits.index.root, trials=1, mode=mode, direction=direction)
    test = splits.test
    numbers = file_numbers(splits.index.test) if spec.protocol == "official" else None
    trial = protocol_trials(spec, test.pids, test.cams, test.is_ir, numbers)[0]
    partners = None
    if method_spec(meta["method"]).needs_partners:
        beside = Path(checkpoint).resolve().parent.parent / "gan" / "gan.pt"
        partners = PartnerSource.from_record(meta).test_partners(len(test), device, override=gan_checkpoint, beside=beside,
                                                                 model=str(checkpoint))
    needed = np.unique(np.concatenate([trial.query, trial.gallery]))
    feats = extract_features(model, test, needed, device, partners=partners, feature=test_feature(cfg, meta["method"]), batch_size=cfg.eval.batch_size,
                             amp=cfg.eval.amp)
    row = np.full(len(test), -1, dtype=np.int64)
    row[needed] = np.arange(len(needed))
    dist = 1.0 - feats[row[trial.query]] @ feats[row[trial.gallery]].T  # (Q, G) cosine distance, the protocol's
    q_pids, g_pids = test.pids[trial.query], test.pids[trial.gallery]
    ap = per_query_average_precision(dist, q_pids, g_pids, ignore=trial.ignore)
    masked = dist if trial.ignore is None else np.where(trial.ignore, np.inf, dist)
    return Trial0Ranking(spec, meta, test, trial, ap, masked, q_pids, g_pids)


def _log_image(checkpoint: Path, image: np.ndarray, what: str) -> None:
    """The grid into the run's TensorBoard (``<run>/tb/insight``), beside its training curves."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(checkpoint).resolve().parent.parent
    with SummaryWriter(str(run_dir / "tb" / "insight")) as writer:
        writer.add_image(f"show_ranks/{what}", torch.from_numpy(np.array(image)).permute(2, 0, 1), 0)


# --------------------------------------------------------------------------- compare


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def compare_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """Config differences and metrics of several run directories.

    Returns:
        ``{"runs": [names], "differences": {key: [value per run]}, "metrics": {row: [value
        per run]}}``: only config keys whose values differ; metrics from each ``results.json``
        (last epoch, and best-on-test / re-ranked Rank-1 where the run has them).

    Raises:
        UserError: fewer than 2 runs, or a folder without ``config.toml``.
    """
    if len(run_dirs) < 2:
        raise UserError("pipeline compare needs at least two run directories")
    configs, results = [], []
    for run in run_dirs:
        path = Path(run) / "config.toml"
        if not path.is_file():
            raise UserError(f"{run} has no config.toml; pass run directories written by run-all, train-fusion or ablate")
        configs.append(_flatten(tomllib.loads(path.read_text())))
        res = Path(run) / "results.json"
        results.append(json.loads(res.read_text()) if res.is_file() else {})
    keys = sorted(set().union(*configs))
    differences = {k: [c.get(k, "–") for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    metrics: dict[str, list] = {}
    for label, key in (("Rank-1", "rank1"), ("mAP", "mean_ap"), ("mINP", "minp")):
        metrics[label] = [r[key]["mean"] if key in r else None for r in results]
    metrics["Rank-1 best on test (optimistic)"] = [r.get("best_on_test", {}).get("rank1", {}).get("mean") for r in results]
    metrics["Rank-1 re-ranked"] = [r.get("with_reranking", {}).get("rank1", {}).get("mean") for r in results]
    metrics["method"] = [r.get("method") for r in results]
    names = [Path(r).name if Path(r).name not in ("", ".") else str(r) for r in run_dirs]
    if len(set(names)) < len(names):
        names = [str(r) for r in run_dirs]
    return {"runs": names, "differences": differences, "metrics": metrics}


def format_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as an aligned text table: one column per run."""
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"
        return str(v)

    rows = [("", comparison["runs"])]
    rows += [(k, [cell(x) for x in v]) for k, v in comparison["metrics"].items()]
    rows += [("config: " + k, [cell(x) for x in v]) for k, v in comparison["differences"].items()]
    if not comparison["differences"]:
        rows.append(("config", ["identical"] * len(comparison["runs"])))
    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(r[1][i]) for r in rows) for i in range(len(comparison["runs"]))]
    return "\n".join(f"{name:<{width0}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths)) for name, values in rows)
