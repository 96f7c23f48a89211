"""pipeline ablate: variant grammar, paired intervals, and a tiny end-to-end ablation that
resumes where it stopped."""

from __future__ import annotations

import json

import pytest
import torch

from common.config import dump_config
from common.errors import UserError
from pipelines.ablate import ablate, paired_difference, parse_variant
from pipelines.partners import PartnerKind

CPU = torch.device("cpu")


def test_variant_grammar():
    v = parse_variant("tsme-gray-noiai")
    assert (v.method, v.partners) == ("tsme", PartnerKind.GRAY) and v.overrides == {"fusion": {"recipes": {"tsme": {"iai": False}}}}
    assert parse_variant("tsme-nogate").overrides == {"fusion": {"recipes": {"tsme": {"gate": False}}}}
    assert parse_variant("tsme-paperstreams").overrides == {"fusion": {"recipes": {"tsme": {"streams": "paper"}}}}
    assert parse_variant("agw") .overrides == {} and parse_variant("agw").partners is PartnerKind.CACHE
    # a modifier several methods accept, through their specs
    assert parse_variant("agw-graymix").overrides == {"fusion": {"recipes": {"agw": {"gray_mix_p": 0.5}}}}
    assert parse_variant("mso-graymix").overrides == {"fusion": {"recipes": {"mso": {"gray_mix_p": 0.5}}}}
    assert parse_variant("tsme-grayout-twosample").stage1_modifiers == ("grayout", "twosample")
    with pytest.raises(UserError, match="unknown --method 'nope'"):
        parse_variant("nope-gray")
    with pytest.raises(UserError, match="unknown modifier 'shiny'"):
        parse_variant("tsme-shiny")
    with pytest.raises(UserError, match="applies to tsme, not agw"):
        parse_variant("agw-gray")
    with pytest.raises(UserError, match="applies to agw, tsme, mso, not glmn"):
        parse_variant("glmn-graymix")


def test_paired_difference_by_hand():
    # d = (2, 3, 4): mean 3, sd 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    d = paired_difference([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])
    assert d["mean"] == pytest.approx(3.0)
    assert d["ci95"] == pytest.approx(2.484138, abs=1e-6)
    assert (d["low"], d["high"]) == pytest.approx((3.0 - 2.484138, 3.0 + 2.484138), abs=1e-6)
    one = paired_difference([5.0], [4.0])
    assert one["mean"] == pytest.approx(1.0) and one["ci95"] is None


@pytest.mark.e2e
def test_tiny_ablation_end_to_end_and_resume(sysu_tree, tiny_cfg, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_cfg))
    kwargs = dict(dataset="sysu", data_root=sysu_tree, profile="demo", config_file=config, variants=["agw", "tsme-gray"],
                  seeds=2, run_dir=tmp_path / "ablate", device=CPU)
    report = ablate(**kwargs)
    runs = [tmp_path / "ablate" / v / f"seed{s}" for v in ("agw", "tsme-gray") for s in (0, 1)]
    assert all((r / "results.json").is_file() for r in runs)
    agw, gray = report["variants"]["agw"], report["variants"]["tsme-gray"]
    assert [r["seed"] for r in agw["seeds"]] == [0, 1] and agw["vs_baseline"] is None
    # the difference is paired seed by seed
    diffs = [g["rank1"] - a["rank1"] for g, a in zip(gray["seeds"], agw["seeds"])]
    assert gray["vs_baseline"]["rank1"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert json.loads((tmp_path / "ablate" / "ablation.json").read_text())["baseline"] == "agw"
    md = (tmp_path / "ablate" / "ablation.md").read_text()
    assert "| `tsme-gray` |" in md and "Δ Rank-1 vs agw" in md and "seed 1:" in md
    # seeds differ: the seed reaches the training
    s0 = torch.load(runs[0] / "fusion" / "reid.pt", weights_only=False)["model"]
    s1 = torch.load(runs[1] / "fusion" / "reid.pt", weights_only=False)["model"]
    assert not torch.equal(s0["bnneck.classifier.weight"], s1["bnneck.classifier.weight"])
    # an interrupted ablation continues: complete runs are skipped, a missing one is redone
    kept = (runs[0] / "results.json").stat().st_mtime_ns
    (runs[3] / "results.json").unlink()
    again = ablate(**kwargs)
    assert (runs[0] / "results.json").stat().st_mtime_ns == kept and (runs[3] / "results.json").is_file()
    assert again["variants"]["tsme-gray"]["rank1"] == report["variants"]["tsme-gray"]["rank1"]
