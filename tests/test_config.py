import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

from common.config import dump_config
from stage2_fusion.methods import METHODS, config_from_dict, load_config
from common.errors import UserError


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_profile_round_trips_through_written_toml(profile):
    cfg = load_config(profile)
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg


def test_config_file_overrides_profile(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[gan]\nepochs = 7\n[fusion.recipes.tsme]\nlr = 0.05\n")
    cfg = load_config("demo", path)
    assert cfg.gan.epochs == 7 and cfg.fusion.recipe("tsme").lr == 0.05
    assert cfg.gan.batch_size == load_config("demo").gan.batch_size  # untouched keys kept


@pytest.mark.parametrize(
    "text, fragment",
    [("[gan]\nepochz = 3\n", "gan.epochz"), ("[gan]\nepochs = 'many'\n", "gan.epochs"),
     ("[eval]\nshots = 5\n", "eval.shots"), ("[gan\n", "not valid TOML")],
)
def test_bad_config_is_one_line_user_error(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")) as info:
        load_config("demo", path)
    assert "\n" not in str(info.value)


def test_unknown_profile_and_missing_file():
    with pytest.raises(UserError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(UserError, match="does not exist"):
        load_config("demo", config_file="/nonexistent/cfg.toml")


def test_paper_profile_refuses_to_train_without_a_choice_of_imagenet_weights():
    from common.config import for_inference, require_pretrained_choice

    paper = load_config("paper")
    with pytest.raises(UserError, match=r"fusion\.backbone\.pretrained is 'required'.*--pretrained PATH.*--pretrained none"):
        require_pretrained_choice(paper, gan=False)
    with pytest.raises(UserError, match=r"gan\.pretrained"):
        require_pretrained_choice(paper, gan=True, fusion=False)
    chosen = load_config("paper", overrides={"gan": {"pretrained": "none"}, "fusion": {"backbone": {"pretrained": "none"}}})
    require_pretrained_choice(chosen, gan=True)  # an explicit 'none' trains from scratch
    require_pretrained_choice(load_config("demo"), gan=True, vgg16=True)  # the demo names its stand-in
    with pytest.raises(UserError, match=r"fusion\.vgg16 is 'required'.*--vgg16 PATH.*--vgg16 none"):
        require_pretrained_choice(chosen, gan=True, vgg16=True)  # MSO's PEF: a VGG16 choice too
    require_pretrained_choice(chosen, gan=True, vgg16=False)  # a method without PEF does not need one
    # which methods need that VGG16: an edge operator with MSO's PEF loss, not our 'fuse' loss
    from stage2_fusion.edges import uses_pef

    assert uses_pef(paper.fusion.recipe("mso")) and not uses_pef(paper.fusion.recipe("agw")) and not uses_pef(paper.fusion.recipe("tsme"))
    assert not uses_pef(paper.fusion.recipe("glmn")) and not uses_pef(None)  # no edge options at all
    fused = load_config("paper", overrides={"fusion": {"recipes": {"mso": {"edge_loss": "fuse"}}}})
    assert fused.fusion.recipe("mso").edge != "none" and not uses_pef(fused.fusion.recipe("mso"))
    # a trained model is rebuilt without reading any ImageNet file
    rebuilt = for_inference(load_config("paper", overrides={"fusion": {"backbone": {"pretrained": "/gone/resnet50.pth"}}}))
    assert rebuilt.fusion.backbone.pretrained == "none" and rebuilt.gan.pretrained == "none"
    assert rebuilt.fusion.backbone.layers == paper.fusion.backbone.layers


# --------------------------------------------------------------------------- demo = paper, scaled

#: What demo.toml may change from paper.toml: scale only (issue: image size, widths, depths,
#: non-local block counts, embedding size, epochs and the epochs of milestones, warm-up and
#: evaluation, padding, steps, batch and worker settings, data sizes, which pretrained file).
SCALE_KEYS = {
    "profile",
    "data.height", "data.width", "data.decode_threads",
    "data.demo_seed", "data.demo_train_ids", "data.demo_val_ids", "data.demo_test_ids", "data.demo_physics",
    "gan.encoder_layers", "gan.base_width", "gan.disc_widths", "gan.epochs", "gan.decay_start_epoch", "gan.steps_per_epoch",
    "gan.batch_size", "gan.image_every", "gan.pretrained", "gan.monitor_every", "gan.reid_pretrain_steps", "gan.reid_ids_per_batch",
    "fusion.vgg16",
    "fusion.backbone.layers", "fusion.backbone.base_width", "fusion.backbone.nonlocal_blocks", "fusion.backbone.pretrained",
    "eval.batch_size",
}
SCALE_RECIPE_KEYS = {"ids_per_batch", "images_per_id", "epochs", "steps_per_epoch", "warmup_epochs", "milestones", "eval_every",
                     "pad", "height", "width", "pef_stages", "embed_dim"}


def _flat(table, prefix=""):
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _allowed(key: str) -> bool:
    if key in SCALE_KEYS:
        return True
    parts = key.split(".")
    return key.startswith("fusion.recipes.") and len(parts) == 4 and parts[3] in SCALE_RECIPE_KEYS


@pytest.mark.parametrize("profile", ["demo", "demo-full"])
def test_demo_profile_is_the_paper_profile_scaled(profile):
    """Resolved demo and paper configs (every key, defaults included) differ only in scale keys."""
    import dataclasses

    demo = _flat(dataclasses.asdict(load_config(profile)))
    paper = _flat(dataclasses.asdict(load_config("paper")))
    assert demo.keys() == paper.keys()
    differ = sorted(k for k in demo if demo[k] != paper[k] and not _allowed(k))
    assert not differ, f"{profile}.toml differs from paper.toml in more than scale: " + ", ".join(
        f"{k} = {demo[k]!r} (paper {paper[k]!r})" for k in differ)
    assert any(demo[k] != paper[k] for k in demo if k.startswith("fusion.recipes.")), "the demo should be smaller"


#: What demo-full.toml may change from demo.toml: the schedules' lengths in optimiser steps.
SCHEDULE_KEYS = {"profile", "gan.epochs", "gan.decay_start_epoch", "gan.steps_per_epoch", "gan.monitor_every"}


def test_demo_full_is_the_demo_with_longer_schedules_only():
    import dataclasses

    demo = _flat(dataclasses.asdict(load_config("demo")))
    full = _flat(dataclasses.asdict(load_config("demo-full")))
    differ = {k for k in demo if demo[k] != full[k]}
    assert differ - SCHEDULE_KEYS == {f"fusion.recipes.{m}.steps_per_epoch" for m in ("agw", "tsme", "mso", "mscmnet", "glmn")}
    g_demo, g_full = (load_config(p).gan for p in ("demo", "demo-full"))
    assert g_full.epochs * g_full.steps_per_epoch > g_demo.epochs * g_demo.steps_per_epoch  # longer, in optimiser steps
    assert g_full.decay_start_epoch / g_full.epochs == g_demo.decay_start_epoch / g_demo.epochs == 0.5  # CycleGAN's shape kept
    assert all(load_config("demo-full").fusion.recipe(m).steps_per_epoch > 0 for m in ("agw", "tsme", "mso", "mscmnet", "glmn"))


def test_a_profile_extends_another_and_overrides_only_what_it_lists(tmp_path, monkeypatch):
    from common import config as config_module

    texts = {"base": '[gan]\nlr = 0.5\nbeta1 = 0.1\n', "child": 'extends = "base"\n[gan]\nlr = 0.25\n'}
    monkeypatch.setattr(config_module, "_profile_text", lambda name: texts[name])
    assert config_module.profile_table("child") == {"gan": {"lr": 0.25, "beta1": 0.1}}
    assert config_module.profile_table("base") == {"gan": {"lr": 0.5, "beta1": 0.1}}


def test_the_profile_test_catches_a_changed_rate_and_an_idea_of_ours():
    import dataclasses

    paper = _flat(dataclasses.asdict(load_config("paper")))
    for override, key in (({"fusion": {"recipes": {"tsme": {"lr": 0.03}}}}, "fusion.recipes.tsme.lr"),
                          ({"fusion": {"recipes": {"agw": {"gray_mix_p": 0.5}}}}, "fusion.recipes.agw.gray_mix_p"),
                          ({"gan": {"select_by": "two-sample"}}, "gan.select_by"),
                          ({"fusion": {"recipes": {"glmn": {"adp_square": False}}}}, "fusion.recipes.glmn.adp_square")):
        demo = _flat(dataclasses.asdict(load_config("demo", overrides=override)))
        assert [k for k in demo if demo[k] != paper[k] and not _allowed(k)] == [key]


@pytest.mark.parametrize("method, key", [("mscmnet", "gray_mix_p"), ("glmn", "channel_aug"), ("mscmnet", "wrt_weight"),
                                         ("tsme", "cmcc_weight"), ("agw", "qct_weight"), ("glmn", "hc_weight")])
def test_a_recipe_key_its_method_does_not_use_is_refused(tmp_path, method, key):
    path = tmp_path / "mine.toml"
    path.write_text(f"[fusion.recipes.{method}]\n{key} = {'true' if key == 'channel_aug' else '0.5'}\n")
    with pytest.raises(UserError, match=rf"fusion\.recipes\.{method}\.{key}: method {method} does not use {key}") as info:
        load_config("demo", path)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=rf"method {method} does not use {key}"):
        load_config("paper", overrides={"fusion": {"recipes": {method: {key: 0.5}}}})


def test_keys_a_method_reads_are_accepted_and_the_written_config_lists_only_those():
    cfg = load_config("demo", overrides={"fusion": {"recipes": {"agw": {"gray_mix_p": 0.5}, "glmn": {"adp_square": False}}}})
    assert cfg.fusion.recipe("agw").gray_mix_p == 0.5 and cfg.fusion.recipe("glmn").adp_square is False
    written = tomllib.loads(dump_config(cfg))["fusion"]["recipes"]
    assert "gray_mix_p" not in written["mscmnet"] and "qct_weight" not in written["agw"] and written["agw"]["gray_mix_p"] == 0.5


def test_amp_dtype_is_bf16_in_both_profiles_and_fp16_is_the_references_choice():
    assert load_config("paper").fusion.amp_dtype == load_config("demo").fusion.amp_dtype == "bf16"
    assert load_config("paper", overrides={"fusion": {"amp_dtype": "fp16"}}).fusion.amp_dtype == "fp16"
    with pytest.raises(UserError, match="fusion.amp_dtype 'fp32' is unknown; use bf16 or fp16"):
        load_config("paper", overrides={"fusion": {"amp_dtype": "fp32"}})


# --------------------------------------------------------------------------- the profiles are the only source of values


def _config_classes():
    from common.config import Config

    seen, todo = [], [Config]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        hints = typing.get_type_hints(cls)
        todo += [hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name]) and hints[f.name] not in seen]
    return seen + [spec.recipe_type for spec in METHODS.values()]


def test_no_config_field_has_a_default_so_none_can_contradict_a_profile():
    classes = _config_classes()
    assert {c.__name__ for c in classes} >= {"Config", "DataConfig", "GanConfig", "FusionConfig", "BackboneConfig", "EvalConfig",
                                              "PretrainConfig", "AGWRecipe", "TSMERecipe", "MSORecipe", "MSCMNetRecipe", "GLMNRecipe"}
    with_default = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert not with_default, with_default


def test_a_key_no_table_gives_is_refused_by_name(tmp_path):
    import tomllib as toml

    table = toml.loads(dump_config(load_config("demo")))
    del table["fusion"]["recipes"]["glmn"]["local_weight"]
    with pytest.raises(UserError, match=r"config key 'fusion\.recipes\.glmn\.local_weight' has no value") as info:
        config_from_dict(table)
    assert "\n" not in str(info.value)


def test_the_weights_choice_is_typed():
    from common.weights import Weights, WeightsKind

    demo, paper = load_config("demo"), load_config("paper")
    assert demo.fusion.backbone.pretrained.kind is WeightsKind.STANDIN and paper.fusion.vgg16.kind is WeightsKind.REQUIRED
    assert [Weights(s).kind for s in ("none", "", "imagenet", "demo-standin", "required", "/w/resnet50.pth")] == [
        WeightsKind.NONE, WeightsKind.NONE, WeightsKind.IMAGENET, WeightsKind.STANDIN, WeightsKind.REQUIRED, WeightsKind.PATH]
    assert Weights("/w/resnet50.pth").path == Path("/w/resnet50.pth") and Weights("none").path is None
    assert Weights("imagenet").loads and not Weights("none").loads and not Weights("required").loads
    with pytest.raises(UserError, match="must be a string"):
        load_config("demo", overrides={"fusion": {"vgg16": 3}})
    # written back exactly as given: a resolved config.toml reads back to the same config
    cfg = load_config("demo", overrides={"fusion": {"backbone": {"pretrained": "/w/resnet50.pth"}}})
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg and isinstance(cfg.fusion.backbone.pretrained, Weights)
