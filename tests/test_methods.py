"""The method registry: every method is one spec, read by config loading, ablate, training,
testing and the CLI; a method registered from outside the package trains and tests end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from common.config import Recipe, check_range, dump_config
from common.errors import UserError
from pipelines.ablate import parse_variant
from pipelines.cli import app
from stage2_fusion.layers import BNNeck
from stage2_fusion.losses import identity_loss
from stage2_fusion.methods import METHODS, load_config, method_spec
from stage2_fusion.method_spec import MethodSpec, Modifier, modifiers


# --------------------------------------------------------------------------- a toy method, declared outside the package


@dataclasses.dataclass(frozen=True)
class ToyRecipe(Recipe):
    """The toy's own key: the width of its one convolution."""

    channels: int

    def check(self, where: str) -> None:
        super().check(where)
        check_range(self.channels >= 1, f"{where}.channels", self.channels, ">= 1")


class ToyNet(nn.Module):
    """One strided convolution per modality, global average pooling, a BNNeck."""

    method = "toy"

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        channels = cfg.fusion.recipe(self.method).channels
        self.stems = nn.ModuleDict({m: nn.Conv2d(3, channels, 3, stride=4, padding=1) for m in ("vis", "ir")})
        self.bnneck = BNNeck(channels, num_classes)

    def head_modules(self) -> list[nn.Module]:
        return [self.bnneck]

    def forward(self, inputs, partners=None):
        feat = torch.cat([self.stems[m](x).mean(dim=(2, 3)) for m, x in inputs.items()])  # (B, channels)
        post, logits = self.bnneck(feat)
        return {"feat_pre_bn": feat, "feat_post_bn": post, "logits": logits}

    @torch.no_grad()
    def extract(self, inputs, partners=None, feature="post"):
        out = self.forward(inputs)
        return F.normalize(out["feat_post_bn" if feature == "post" else "feat_pre_bn"].float(), dim=1)


def toy_loss(outputs, labels, is_ir, recipe):
    loss = identity_loss(outputs["logits"], labels)
    return {"id": loss, "total": recipe.id_weight * loss, "acc": (outputs["logits"].argmax(1) == labels).float().mean()}


TOY = MethodSpec(name="toy", summary="a toy for the registry test", recipe_type=ToyRecipe, build=ToyNet, loss=toy_loss,
                 modifiers=modifiers(Modifier("wide", "twice the channels", recipe={"channels": 16})))


def _toy_table(**keys) -> dict:
    """A whole [fusion.recipes.toy] table: the shared keys as AGW's demo recipe has them, one epoch of 3 steps."""
    agw = dataclasses.asdict(load_config("demo").fusion.recipe("agw"))
    shared = {f.name: agw[f.name] for f in dataclasses.fields(Recipe)}
    return {**shared, "ids_per_batch": 2, "images_per_id": 2, "epochs": 1, "steps_per_epoch": 3, "milestones": [], "warmup_epochs": 0,
            "eval_every": 0, "channels": 8, **keys}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", TOY)
    return TOY


# --------------------------------------------------------------------------- the registry


def test_every_method_is_one_spec_with_its_own_recipe_type():
    for name, spec in METHODS.items():
        assert spec.name == name and issubclass(spec.recipe_type, Recipe) and spec.recipe_type is not Recipe
        recipe = load_config("paper").fusion.recipe(name)
        assert type(recipe) is spec.recipe_type  # the profile's table, typed by the method's own class
    assert [n for n, s in METHODS.items() if s.needs_partners] == ["tsme"]
    from stage2_fusion.methods import build_view_augment

    paper = load_config("paper")
    own_views = [n for n in METHODS if build_view_augment(n, (32, 16), paper.fusion.recipe(n)) is not None]
    assert own_views == ["mscmnet", "glmn"]  # the papers' layouts: one view per image for the others
    caj = load_config("paper", overrides={"fusion": {"recipes": {n: {"views": "caj"} for n in ("agw", "tsme", "mso")}}})
    assert all(type(build_view_augment(n, (32, 16), caj.fusion.recipe(n))).__name__ == "CajViews" for n in ("agw", "tsme", "mso"))
    assert sorted(n for n, s in METHODS.items() if s.takes_edges) == ["agw", "mso", "tsme"]
    # a modifier several methods accept is one object, reached through each spec
    assert METHODS["agw"].modifiers["graymix"] is METHODS["tsme"].modifiers["graymix"] is METHODS["mso"].modifiers["graymix"]
    assert "graymix" not in METHODS["glmn"].modifiers and "nosquare" in METHODS["glmn"].modifiers
    with pytest.raises(UserError, match="unknown --method 'toy'"):
        method_spec("toy")


def test_a_spec_refuses_a_modifier_of_keys_its_recipe_does_not_have():
    with pytest.raises(ValueError, match="not keys of its recipe"):
        dataclasses.replace(TOY, modifiers=modifiers(Modifier("graymix", "x", recipe={"gray_mix_p": 0.5})))
    with pytest.raises(TypeError, match="Recipe dataclass"):
        dataclasses.replace(TOY, recipe_type=dict)


def test_a_method_registered_from_outside_reads_its_own_recipe(toy):
    cfg = load_config("demo", overrides={"fusion": {"recipes": {"toy": _toy_table()}}})
    assert isinstance(cfg.fusion.recipe("toy"), ToyRecipe) and cfg.fusion.recipe("toy").channels == 8
    with pytest.raises(UserError, match=r"fusion\.recipes\.toy\.gray_mix_p: method toy does not use gray_mix_p"):
        load_config("demo", overrides={"fusion": {"recipes": {"toy": _toy_table(gray_mix_p=0.5)}}})
    with pytest.raises(UserError, match=r"fusion\.recipes\.toy\.channels' = 0 is out of range"):
        load_config("demo", overrides={"fusion": {"recipes": {"toy": _toy_table(channels=0)}}})
    assert parse_variant("toy-wide").overrides == {"fusion": {"recipes": {"toy": {"channels": 16}}}}
    with pytest.raises(UserError, match="applies to toy, not agw"):
        parse_variant("agw-wide")


@pytest.mark.e2e
def test_a_toy_method_trains_one_epoch_on_the_demo_and_is_tested(toy, tmp_path):
    from common.demo.writing import make_demo

    demo = make_demo(tmp_path / "demo", 0, n_train=6, n_val=2, n_test=6)
    cfg = load_config("demo", overrides={
        "data": {"height": 32, "width": 16},
        "gan": {"pretrained": "none"},
        "fusion": {"vgg16": "none", "backbone": {"pretrained": "none"}, "recipes": {"toy": _toy_table()}},
        "eval": {"trials": 2},
    })
    config = tmp_path / "toy.toml"
    config.write_text(dump_config(cfg))
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-all", "--dataset", "demo", "--data-root", str(demo), "--method", "toy", "--config", str(config),
                                   "--run-dir", str(run_dir), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "toy" and results["epoch"] == 1 and results["num_trials"] == 2
    assert not (run_dir / "gan").exists()  # the toy needs no partners: no stage 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["stage"] == "fusion"] == [1]
    state = torch.load(run_dir / "fusion" / "reid.pt", weights_only=False)
    assert state["method"] == "toy" and state["config"]["fusion"]["recipes"]["toy"]["channels"] == 8


def test_a_checkpoint_written_before_the_method_recipes_still_loads():
    """Before issue 28 every recipe held all methods' 38 keys and TSME's model keys sat in
    [fusion]; config_from_checkpoint reads such a config back to today's."""
    from common.config import config_section_dict
    from stage2_fusion.methods import config_from_checkpoint

    cfg = load_config("demo")
    old = config_section_dict(cfg)
    every_key = {}
    for recipe in old["fusion"]["recipes"].values():
        every_key.update(recipe)
    for name, recipe in old["fusion"]["recipes"].items():  # the old 38-key bag, other methods' keys included
        old["fusion"]["recipes"][name] = {**every_key, **recipe}
    tsme = old["fusion"]["recipes"]["tsme"]
    for new, legacy in (("embed_dim", "embed_dim"), ("num_stripes", "num_stripes"), ("num_aux_stripes", "num_aux_stripes"),
                        ("streams", "tsme_streams"), ("gate", "tsme_gate"), ("iai", "tsme_iai")):
        old["fusion"][legacy] = tsme[new]
    for name in old["fusion"]["recipes"]:
        for key in ("streams", "gate", "iai", "embed_dim", "num_aux_stripes", "num_stripes"):
            old["fusion"]["recipes"][name].pop(key, None)
    assert config_from_checkpoint(old) == cfg
    with pytest.raises(UserError, match="does not use"):  # outside checkpoints, another method's key is still refused
        load_config("demo", overrides={"fusion": {"recipes": {"agw": {"qct_weight": 1.0}}}})


def test_the_partner_source_a_checkpoint_records_also_in_the_old_keys():
    from pipelines.partners import PartnerKind, PartnerSource

    cache = PartnerSource(PartnerKind.CACHE, "/r/gan/gan.pt", "ab" * 32, "/r/partner_cache", "f" * 16)
    assert PartnerSource.from_record({"partners": cache.record()}) == cache
    assert cache.identity == f"{'ab' * 32}:{'f' * 16}" and PartnerSource.gray().identity == "gray"
    # before issue 28: gan_checkpoint / gan_sha256 / pairs
    assert PartnerSource.from_record({"gan_checkpoint": "gray", "gan_sha256": None, "pairs": "gray"}).kind is PartnerKind.GRAY
    otf = PartnerSource.from_record({"gan_checkpoint": "/r/gan.pt", "gan_sha256": "cd", "pairs": "on-the-fly"})
    assert (otf.kind, otf.generator, otf.generator_sha256, otf.cache) == (PartnerKind.ON_THE_FLY, "/r/gan.pt", "cd", None)
    old_cache = PartnerSource.from_record({"gan_checkpoint": "/r/gan.pt", "gan_sha256": "cd", "pairs": "/r/pairs"})
    assert (old_cache.kind, old_cache.cache) == (PartnerKind.CACHE, "/r/pairs")
    assert PartnerSource.from_record({"method": "agw"}) is None


def test_a_checkpoint_written_before_stage_1s_options_and_cajs_views_loads_with_the_values_runs_used():
    """Checkpoints from before issue 27 lack gan.input, the identity-loss keys, the probe's
    interval and the recipes' views / triplet: they load with what every run then used."""
    from common.config import config_section_dict
    from stage2_fusion.methods import config_from_checkpoint

    cfg = load_config("demo", overrides={"gan": {"input": "rgb", "reid_id_weight": 1.0}, "fusion": {"recipes": {"agw": {"triplet": "adp"}}}})
    old = config_section_dict(cfg)
    for key in ("input", "monitor_every", "reid_id_weight", "reid_triplet_weight", "reid_margin", "reid_pretrain_steps", "reid_ids_per_batch"):
        del old["gan"][key]
    for recipe in old["fusion"]["recipes"].values():
        recipe.pop("views", None)
        recipe.pop("triplet", None)
    loaded = config_from_checkpoint(old)
    assert (loaded.gan.input, loaded.gan.reid_id_weight, loaded.gan.reid_triplet_weight, loaded.gan.monitor_every) == ("gray", 0.0, 0.0, 0)
    assert (loaded.fusion.recipe("agw").views, loaded.fusion.recipe("agw").triplet, loaded.fusion.recipe("tsme").views) == ("single", "wrt", "single")
    assert loaded.fusion.recipe("glmn") == cfg.fusion.recipe("glmn")  # keys present stay as written
