"""benchmarks/figures.py: every figure drawn from real results files of a tiny demo run, the
committed figures small and referenced, and the committed ablation report equal to the
figures of benchmarks/RESULTS.md it was rebuilt from."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"

pytest.importorskip("matplotlib", reason="the figures need matplotlib: pip install -e '.[test]' (or '.[docs]')")


def _figures():
    spec = importlib.util.spec_from_file_location("figures", ROOT / "benchmarks" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures()


# --------------------------------------------------------------------------- the committed figures


def _pages_text() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])


def test_committed_figures_are_small_referenced_and_recorded():
    pngs = sorted(IMG.glob("*.png"))
    assert {p.stem for p in pngs} == set(figures.FIGURES)
    manifest = json.loads((IMG / "figures.json").read_text())
    text = _pages_text()
    for png in pngs:
        assert png.stat().st_size < figures.MAX_BYTES, f"{png.name}: {png.stat().st_size} bytes"
        assert f"img/{png.name}" in text, f"{png.name} is shown on no page"
        assert manifest[png.name]["bytes"] == png.stat().st_size, f"{png.name} changed since figures.py wrote it"
        assert manifest[png.name]["inputs"], png.name
    assert manifest["_command"] == "python benchmarks/figures.py benchmarks/figures.toml"


def _results_table(section: str) -> dict[str, list[str]]:
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([\w-]+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_the_committed_ablation_report_is_results_md_ablation():
    """benchmarks/results/ablation-demo-v3.json was rebuilt from RESULTS.md's per-seed figures
    (rounded to 2 decimals): its means, stds and paired intervals are RESULTS.md's table to
    within that rounding, against agw and against tsme."""
    report = json.loads((ROOT / "benchmarks" / "results" / "ablation-demo-v3.json").read_text())
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = text[text.index("## Ablation on the demo data"):text.index("### Stage 1 on the demo")]
    vs_agw = _results_table(section[:section.index("Per seed")])
    vs_tsme = _results_table(section[section.index("Against `tsme`"):section.index("Against `glmn`")])
    assert set(vs_agw) == set(report["variants"]) and report["baseline"] == "agw" and report["seeds"] == 5
    numbers = re.compile(r"[-+]?\d+\.\d+")
    for table, rep in ((vs_agw, report), (vs_tsme, figures.rebase(report, "tsme"))):
        for name, cells in table.items():
            v = rep["variants"][name]
            for cell, key in zip(cells[:3], ("rank1", "mean_ap", "minp")):
                mean, std = map(float, numbers.findall(cell))
                assert v[key]["mean"] == pytest.approx(mean, abs=0.011) and v[key]["std"] == pytest.approx(std, abs=0.011), (name, key)
            for cell, key in zip(cells[3:6], ("rank1", "mean_ap", "minp")):
                if cell == "–":
                    assert v["vs_baseline"] is None
                    continue
                mean, low, high = map(float, numbers.findall(cell))
                d = v["vs_baseline"][key]
                assert (d["mean"], d["low"], d["high"]) == pytest.approx((mean, low, high), abs=0.02), (name, key)


# --------------------------------------------------------------------------- made from results files


def test_rebase_takes_paired_differences_against_another_variant():
    report = {"baseline": "a", "variants": {
        "a": {"seeds": [{"seed": 0, "rank1": 1.0, "mean_ap": 2.0, "minp": 1.0}, {"seed": 1, "rank1": 2.0, "mean_ap": 2.0, "minp": 1.0}]},
        "b": {"seeds": [{"seed": 0, "rank1": 3.0, "mean_ap": 5.0, "minp": 1.0}, {"seed": 1, "rank1": 5.0, "mean_ap": 5.0, "minp": 1.0}]}}}
    rebased = figures.rebase(report, "b")
    d = rebased["variants"]["a"]["vs_baseline"]["rank1"]  # a - b per seed: -2, -3
    assert rebased["baseline"] == "b" and rebased["variants"]["b"]["vs_baseline"] is None
    assert d["mean"] == pytest.approx(-2.5)
    # sd 0.7071, t_{0.975, 1} = 12.7062: half-width 12.7062 * 0.7071 / sqrt(2) = 6.3531
    assert (d["low"], d["high"]) == pytest.approx((-2.5 - 6.3531, -2.5 + 6.3531), abs=1e-3)
    with pytest.raises(ValueError, match="not a variant"):
        figures.rebase(report, "c")


def test_forest_plot_from_an_ablation_report(tmp_path):
    from pipelines.ablate import paired_difference

    seeds = {"agw": [10.0, 11.0, 12.0], "tsme": [9.0, 9.5, 11.0], "tsme-gray": [12.0, 13.5, 14.0]}
    variants = {name: {"seeds": [{"seed": s, "rank1": v, "mean_ap": v + 2, "minp": v - 2} for s, v in enumerate(vals)],
                       "vs_baseline": None if name == "agw" else {
                           k: paired_difference([v + off for v in vals], [v + off for v in seeds["agw"]])
                           for k, off in (("rank1", 0), ("mean_ap", 2), ("minp", -2))}}
                for name, vals in seeds.items()}
    report = {"dataset": "demo", "profile": "demo-full", "seeds": 3, "baseline": "agw", "variants": variants}
    png = figures.forest_plot(report, tmp_path / "forest.png")
    assert 0 < png.stat().st_size < figures.MAX_BYTES
    with pytest.raises(ValueError, match="no variant besides its baseline"):
        figures.forest_plot({**report, "variants": {"agw": variants["agw"]}}, tmp_path / "none.png")


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """A tiny demo (aligned twins included), a DSGAN trained on it with the partner probe on
    (two probes), and AGW trained on it for 2 epochs with evaluation: real gan.pt, reid.pt,
    config.toml and metrics.jsonl files, as run-all writes them."""
    import torch

    from common.config import for_method
    from common.demo.writing import make_demo
    from pipelines.data import load_splits
    from pipelines.stages import train_gan_stage, train_reid_stage, write_run_config
    from stage2_fusion.methods import load_config
    from tests.conftest import TINY_OVERRIDES

    base = tmp_path_factory.mktemp("figures")
    root = make_demo(base / "demo", seed=1, n_train=3, n_val=1, n_test=3, image_size=(64, 32))
    gan = {**TINY_OVERRIDES["gan"], "monitor_every": 3}
    cfg = for_method(load_config("demo", overrides={**TINY_OVERRIDES, "gan": gan}), "agw")
    cpu = torch.device("cpu")
    splits = load_splits(cfg, "demo", root)
    gan_pt = train_gan_stage(cfg, splits, base / "stage1", cpu)
    agw_run = base / "agw"
    write_run_config(cfg, agw_run)
    reid_pt = train_reid_stage(cfg, "agw", splits, None, agw_run, cpu)
    return {"root": root, "gan": gan_pt, "stage1": base / "stage1", "reid": reid_pt, "agw": agw_run}


@pytest.mark.slow
def test_partner_grid_from_gan_checkpoints_and_aligned_twins(demo_runs, tmp_path):
    pairs = figures.demo_test_pairs(demo_runs["root"], 2)
    assert len(pairs) == 2 and all(v.is_file() and t.is_file() and "aligned_nir" in str(t) for _, v, t in pairs)
    assert pairs[0][0] < pairs[1][0]  # distinct test identities, ascending
    png = figures.partner_grid({"a": demo_runs["gan"], "b": demo_runs["gan"]}, demo_runs["root"], tmp_path / "p.png", identities=2)
    assert 0 < png.stat().st_size < figures.MAX_BYTES


@pytest.mark.slow
def test_curves_from_metrics_jsonl(demo_runs, tmp_path):
    stage1 = [r for r in figures.read_metrics(demo_runs["stage1"]) if "probe_ssim" in r]
    assert [r["step"] for r in stage1] == [0, 3, 6]  # 2 epochs x 3 steps, probed every 3
    size = (32, 16)
    baselines = figures.probe_baselines(demo_runs["root"], size)
    assert baselines["twin"]["l1"] == 0.0 and 0 < baselines["gray"]["l1"] < 1
    assert figures.stage1_curves({"tiny": demo_runs["stage1"]}, tmp_path / "s1.png", baselines=baselines).is_file()
    label, per_epoch = figures._run_label("agw", demo_runs["agw"])
    assert per_epoch == 3 and label == "agw (2 epochs x 3 steps)"
    assert figures.reid_curves({"agw": demo_runs["agw"]}, tmp_path / "s2.png", title="tiny").is_file()
    with pytest.raises(ValueError, match="no probe_"):
        figures.stage1_curves({"agw": demo_runs["agw"]}, tmp_path / "bad.png")


@pytest.mark.slow
def test_rank_lists_and_the_front_figure_from_a_reid_checkpoint(demo_runs, tmp_path):
    png, report = figures.rank_list(demo_runs["reid"], "demo", demo_runs["root"], tmp_path / "ranks.png")
    assert png.stat().st_size < figures.MAX_BYTES and report["method"] == "agw"
    aps = [r["ap"] for r in report["rows"]]
    assert [r["percentile"] for r in report["rows"]] == [90, 50, 10] and aps == sorted(aps, reverse=True)
    png, front = figures.front_figure(demo_runs["gan"], demo_runs["reid"], demo_runs["root"], tmp_path / "front.png")
    assert png.stat().st_size < figures.MAX_BYTES and front["person"] == front["rows"][0]["pid"]


def test_make_figures_from_a_toml_and_its_manifest(tmp_path):
    ablation = tmp_path / "ablation.json"
    ablation.write_text((ROOT / "benchmarks" / "results" / "ablation-demo-v3.json").read_text())
    config = {"out": str(tmp_path / "img"), "forest": {"ablation": str(ablation), "baseline": "tsme"}}
    manifest = figures.make_figures(config)
    assert (tmp_path / "img" / "forest.png").is_file() and manifest["forest.png"]["details"] == {"baseline": "tsme"}
    assert manifest["forest.png"]["inputs"]["ablation"]["sha256"] == figures.sha256(ablation)
    assert json.loads((tmp_path / "img" / "figures.json").read_text()) == manifest
    with pytest.raises(ValueError, match="figures are"):
        figures.make_figures(config, {"pie"})


def test_a_png_over_the_limit_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(figures, "MAX_BYTES", 100)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        figures.save_png(Image.fromarray(noise), tmp_path / "big.png")
