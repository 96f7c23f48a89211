"""``pipeline ablate``: which part of the pipeline earns its place, measured over seeds.

Each *variant* is a method plus modifiers, written ``<method>[-<modifier>]*``:

| name            | what it trains                                                          |
|-----------------|-------------------------------------------------------------------------|
| ``agw``         | AGW alone (no stage 1)                                                  |
| ``tsme``        | TSME on the DSGAN's partners (stage 1 + partner cache)                  |
| ``tsme-gray``   | the same network on trivial partners (visible -> BT.601 gray, infrared  |
|                 | -> itself): the control that tells whether stage 1 adds anything        |

A method's file declares the modifiers it accepts (``MethodSpec.modifiers``: ``pipeline
ablate --help`` and :data:`stage2_fusion.methods.METHODS` list them with one line each): a
modifier sets keys of the method's recipe (``tsme-noiai``, ``glmn-nosquare``, the edge
operators ``mso-sobel``, ours ``agw-graymix``), keys of ``[gan]`` (``tsme-grayout``,
``tsme-twosample``: a stage-1 change) or the partner source (``tsme-gray``). One modifier
may be accepted by several methods (``graymix`` by agw, mso and tsme); a modifier a method
does not accept is refused naming the methods that do.

The papers' settings are the defaults; the modifiers marked "ours" are our ideas, measured
against them.

Modifiers compose where they make sense (``tsme-gray-noiai``). Every (variant, seed) is its
own run directory ``<run-dir>/<variant>/seed<k>`` (``pipelines.run_all.run_all``), skipped
when its ``results.json`` is complete for the same configuration, so an interrupted
ablation continues where it stopped. Variants that train on the DSGAN's partners with the same
stage-1 settings share one stage 1 and one partner cache per seed (``<run-dir>/stage1-seed<k>``, or
``stage1-<modifier>-seed<k>`` for a variant that changes the DSGAN). The seed sets
``fusion.seed`` and ``gan.seed``; the data are the same for every run. The first seed of each
variant also tests ``best.pt``, re-ranking and the untrained and pretrained-start baselines.

The report (``ablation.json``, ``ablation.md``) gives, per variant, Rank-1 / mAP / mINP
mean +/- std over seeds (each seed's figure is the mean over the protocol's trials, last
epoch), the per-seed values, the wall time per run, and the difference to the baseline
variant (the first one) with a paired 95 % interval over seeds:
mean(d) +/- t_{0.975, n-1} * sd(d) / sqrt(n), d_s = variant_s - baseline_s (Student's t;
no interval with a single seed).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write_json, atomic_write_text
from common.config import Config, dump_config, merge_tables
from common.errors import UserError
from common.runlog import info
from pipelines.partners import PartnerKind
from stage2_fusion.methods import load_config, method_spec, modifier_of

REPORT_METRICS = (("Rank-1", "rank1"), ("mAP", "mean_ap"), ("mINP", "minp"))


@dataclass(frozen=True)
class Variant:
    """A parsed variant: method, config overrides, partner source, the modifiers that change stage 1."""

    name: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    partners: PartnerKind = PartnerKind.CACHE
    stage1_modifiers: tuple[str, ...] = ()


def parse_variant(name: str) -> Variant:
    """``"tsme-gray-noiai"`` -> :class:`Variant`, from the method's spec and the modifiers it accepts.

    Raises:
        UserError: unknown method or modifier, or a modifier the method does not accept.
    """
    method, *mods = name.split("-")
    try:
        method_spec(method)
    except UserError as exc:
        raise UserError(f"variant '{name}': {exc}") from None
    overrides: dict[str, Any] = {}
    partners = PartnerKind.CACHE
    stage1: list[str] = []
    for mod in mods:
        try:
            modifier = modifier_of(method, mod)
        except UserError as exc:
            raise UserError(f"variant '{name}': {exc}") from None
        overrides = merge_tables(overrides, modifier.overrides(method))
        partners = PartnerKind(modifier.partners) if modifier.partners else partners
        if modifier.changes_stage1:
            stage1.append(mod)
    return Variant(name, method, overrides, partners, tuple(stage1))


def paired_difference(values: list[float], baseline: list[float]) -> dict[str, float | None]:
    """Mean difference over seeds and its paired 95 % Student-t half-width (None for n < 2)."""
    from scipy import stats

    d = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(d)
    half = None
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": float(d.mean()), "ci95": half, "low": None if half is None else float(d.mean()) - half,
            "high": None if half is None else float(d.mean()) + half}


def stage1_folder(run_dir: Path, variant: Variant, seed: int) -> Path:
    """Where the variant's stage 1 and partner cache live: shared per seed by the variants that
    leave the DSGAN as it is, one per stage-1 modifier otherwise."""
    return Path(run_dir) / ("-".join(["stage1", *variant.stage1_modifiers]) + f"-seed{seed}")


def _run_one(cfg: Config, variant: Variant, seed: int, run_dir: Path, stage1_dir: Path, *, dataset: str, data_root: Path | None,
             device: torch.device, cache_dir: Path | None, extras: bool) -> dict[str, Any]:
    from pipelines.run_all import run_all
    from pipelines.stages import prepare_config, trains_stage1

    results_path = run_dir / "results.json"
    written = run_dir / "config.toml"
    if results_path.is_file() and written.is_file() and \
            written.read_text() == dump_config(prepare_config(cfg, variant.method, device, stage1=trains_stage1(variant.method, variant.partners))):
        results = json.loads(results_path.read_text())
        info(f"ablate: {variant.name} seed {seed}: complete, skipped ({results_path})")
        return results
    t0 = time.perf_counter()
    results = run_all(cfg, dataset=dataset, data_root=data_root, run_dir=run_dir, device=device, method=variant.method,
                      cache_dir=cache_dir, partners=variant.partners, stage1_dir=stage1_dir, extras=extras)
    results["ablation_wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(results_path, results)
    return results


def ablate(
    *,
    dataset: str,
    data_root: Path | None,
    profile: str,
    config_file: Path | None,
    variants: list[str],
    seeds: int,
    run_dir: Path,
    device: torch.device,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train and test every (variant, seed); write and return the report.

    Args:
        variants: variant names; the first is the baseline of the differences.
        seeds: number of seeds (0, 1, ..., seeds - 1).

    Returns:
        The ``ablation.json`` content: per variant its per-seed figures, mean/std, wall
        times and differences to the baseline.

    Raises:
        UserError: an unknown variant or modifier, fewer than 1 seed, or a run's error.
    """
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: give at least 1 seed")
    if not variants:
        raise UserError("--variants is empty; name at least one variant, e.g. agw,tsme,tsme-gray")
    parsed = [parse_variant(v) for v in variants]
    load_config(profile, config_file)  # a bad profile or file fails before any training
    run_dir = Path(run_dir)
    per_variant: dict[str, dict[str, Any]] = {}
    for variant in parsed:
        rows = []
        for seed in range(seeds):
            overrides = merge_tables(variant.overrides, {"fusion": {"seed": seed}, "gan": {"seed": seed}})
            cfg = load_config(profile, config_file, overrides)
            info(f"ablate: {variant.name} seed {seed}")
            results = _run_one(cfg, variant, seed, run_dir / variant.name / f"seed{seed}", stage1_folder(run_dir, variant, seed),
                               dataset=dataset, data_root=data_root, device=device, cache_dir=cache_dir, extras=seed == 0)
            rows.append({"seed": seed, **{k: results[k]["mean"] for _, k in REPORT_METRICS},
                         "final_train_acc": results.get("training", {}).get("final_train_acc"),
                         "wall_seconds": results.get("ablation_wall_seconds", results.get("wall_seconds")),
                         "run_dir": str(run_dir / variant.name / f"seed{seed}")})
        summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0}
                   for _, k in REPORT_METRICS}
        accuracies = [r["final_train_acc"] for r in rows if r["final_train_acc"] is not None]
        per_variant[variant.name] = {"method": variant.method, "partners": variant.partners.value, "overrides": variant.overrides,
                                     "seeds": rows, **summary,
                                     "final_train_acc": float(np.mean(accuracies)) if accuracies else None,
                                     "wall_seconds_per_run": float(np.mean([r["wall_seconds"] or 0.0 for r in rows]))}
    baseline = parsed[0].name
    for name, entry in per_variant.items():
        entry["vs_baseline"] = None if name == baseline else {
            k: paired_difference([r[k] for r in entry["seeds"]], [r[k] for r in per_variant[baseline]["seeds"]]) for _, k in REPORT_METRICS}
    report = {"dataset": dataset, "profile": profile, "seeds": seeds, "baseline": baseline, "variants": per_variant,
              "protocol": _protocol_of(run_dir / parsed[0].name / "seed0"),
              "note": "each seed's figure is the mean over the protocol's trials at the last epoch; differences are paired over seeds"}
    atomic_write_json(run_dir / "ablation.json", report)
    atomic_write_text(run_dir / "ablation.md", format_ablation(report))
    return report


def _protocol_of(run: Path) -> str:
    path = run / "results.json"
    return json.loads(path.read_text()).get("protocol", "") if path.is_file() else ""


def format_ablation(report: dict[str, Any]) -> str:
    """The report as a Markdown table (mean +/- std over seeds; paired differences with 95 % CI)."""
    base = report["baseline"]
    head = (["variant"] + [m for m, _ in REPORT_METRICS] + [f"Δ {m} vs {base} (95 % CI)" for m, _ in REPORT_METRICS]
            + ["train acc.", "s / run"])
    lines = [f"Ablation on {report['dataset']} ({report['profile']} profile), {report['seeds']} seeds; {report['protocol']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in report["variants"].items():
        cells = [f"`{name}`"] + [f"{v[k]['mean']:.2f} ± {v[k]['std']:.2f}" for _, k in REPORT_METRICS]
        for _, k in REPORT_METRICS:
            d = None if v["vs_baseline"] is None else v["vs_baseline"][k]
            cells.append("–" if d is None else (f"{d['mean']:+.2f}" + (f" [{d['low']:+.2f}, {d['high']:+.2f}]" if d["ci95"] is not None else "")))
        acc = v.get("final_train_acc")
        cells += ["–" if acc is None else f"{acc:.3f}", f"{v['wall_seconds_per_run']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed (Rank-1 / mAP / mINP):", ""]
    for name, v in report["variants"].items():
        per = "; ".join(f"seed {r['seed']}: {r['rank1']:.2f} / {r['mean_ap']:.2f} / {r['minp']:.2f}" for r in v["seeds"])
        lines.append(f"- `{name}`: {per}")
    return "\n".join(lines) + "\n"


__all__ = ["Variant", "ablate", "format_ablation", "paired_difference", "parse_variant"]
