"""The demo's ImageNet stand-in (common/demo/standin.py): built once, deterministically, cached by
key, resumable, in torchvision's layout, loaded through the --pretrained / --vgg16 path, and
recorded in each run's results."""

from __future__ import annotations

import json

import pytest
import torch

from common.demo import standin
from stage2_fusion.methods import load_config
from common.errors import UserError
from tests.conftest import TINY_OVERRIDES, TINY_PRETRAIN, make_sysu_tree


def _cfg(**pretrain):
    o = {**TINY_OVERRIDES, "pretrain": {**TINY_PRETRAIN, **pretrain},
         "gan": {**TINY_OVERRIDES["gan"], "pretrained": "demo-standin"},
         "fusion": {**TINY_OVERRIDES["fusion"], "vgg16": "demo-standin",
                    "backbone": {**TINY_OVERRIDES["fusion"]["backbone"], "pretrained": "demo-standin"}}}
    return load_config("demo", overrides=o)


def test_builds_torchvision_layout_files_once_and_records_them(tmp_path):
    cfg = _cfg()
    paths = standin.ensure_standins(cfg, torch.device("cpu"), cache_dir=tmp_path)
    assert set(paths) == {"gan.pretrained", "fusion.backbone.pretrained", "fusion.vgg16"}
    assert paths["gan.pretrained"] == paths["fusion.backbone.pretrained"]  # same architecture: one file
    resnet = torch.load(paths["fusion.backbone.pretrained"], weights_only=True)
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight", "fc.weight"} <= set(resnet)
    assert resnet["conv1.weight"].shape == (8, 3, 7, 7)  # the tiny profile's width
    vgg = torch.load(paths["fusion.vgg16"], weights_only=True)
    assert vgg["features.0.weight"].shape == (8, 3, 3, 3) and "features.28.weight" in vgg and "features.30.weight" not in vgg
    assert not any(k.startswith("norms.") for k in vgg), "BatchNorm folded: a plain vgg16 layout"
    record = json.loads(paths["fusion.vgg16"].with_suffix(".json").read_text())
    assert record["identities"] == 6 and record["train_images"] == 18 and record["held_out_images"] == 6
    assert 0.0 <= record["held_out_top1"] <= 1.0 and len(record["history"]) == 1
    assert "demo3" in paths["fusion.vgg16"].name and "seed0" in paths["fusion.vgg16"].name
    mtimes = {p: p.stat().st_mtime_ns for p in paths.values()}
    again = standin.ensure_standins(cfg, torch.device("cpu"), cache_dir=tmp_path)  # cached: nothing rebuilt
    assert again == paths and {p: p.stat().st_mtime_ns for p in again.values()} == mtimes
    other = standin.ensure_standins(_cfg(seed=1), torch.device("cpu"), cache_dir=tmp_path)
    assert set(other.values()).isdisjoint(paths.values()), "another seed is another stand-in"


def test_cache_key_follows_every_input(tmp_path, monkeypatch):
    """A stand-in's file name changes with anything that changes its weights (architecture,
    training size, each recipe field, demo version, optimiser) and only then: an old file is
    never loaded for a new recipe."""
    import dataclasses

    from common.demo import writing

    spec = standin.StandinSpec("resnet", (32, 16), (1, 1, 1, 1), 8)
    recipe = load_config("demo").pretrain
    base = standin.standin_path(spec, recipe, tmp_path)
    assert base == standin.standin_path(standin.StandinSpec("resnet", (32, 16), (1, 1, 1, 1), 8), load_config("demo").pretrain, tmp_path)
    assert base.parent == tmp_path and base.suffix == ".pth"
    others = [standin.standin_path(dataclasses.replace(spec, base_width=16), recipe, tmp_path),
              standin.standin_path(dataclasses.replace(spec, size=(64, 32)), recipe, tmp_path),
              standin.standin_path(standin.StandinSpec("vgg16", (32, 16), width_divisor=8), recipe, tmp_path)]
    others += [standin.standin_path(spec, dataclasses.replace(recipe, **{f.name: getattr(recipe, f.name) * 2}), tmp_path)
               for f in dataclasses.fields(recipe) if f.name != "seed"]
    monkeypatch.setattr(writing, "GENERATOR_VERSION", writing.GENERATOR_VERSION + 1)
    others.append(standin.standin_path(spec, recipe, tmp_path))
    monkeypatch.undo()
    recipe_of = standin._recipe
    monkeypatch.setattr(standin, "_recipe", lambda s: {**recipe_of(s), "lr": recipe_of(s)["lr"] / 2})
    others.append(standin.standin_path(spec, recipe, tmp_path))
    assert len({base, *others}) == len(others) + 1, "every input must change the key"


def test_vgg16_batchnorm_folds_into_plain_convolutions():
    """The VGG16 stand-in trains with BatchNorm; its file is the plain layout, and that plain
    network computes what the BatchNorm network computes in eval mode."""
    torch.manual_seed(0)
    net = standin.VGG16Classifier(8, 5)
    for norm in net.norms.values():  # statistics and affine parameters away from the identity
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    plain = standin.VGG16Classifier(8, 5)
    plain.norms = torch.nn.ModuleDict()
    plain.load_state_dict(net.plain_state_dict())
    x = torch.randn(3, 3, 32, 16)
    torch.testing.assert_close(plain.eval()(x), net(x), rtol=1e-4, atol=1e-5)


def test_same_recipe_same_weights(tmp_path):
    cfg = _cfg()
    a = standin.ensure_standins(cfg, torch.device("cpu"), gan=False, vgg16=False, cache_dir=tmp_path / "a")
    b = standin.ensure_standins(cfg, torch.device("cpu"), gan=False, vgg16=False, cache_dir=tmp_path / "b")
    sa = torch.load(a["fusion.backbone.pretrained"], weights_only=True)
    sb = torch.load(b["fusion.backbone.pretrained"], weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_killed_build_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = _cfg(epochs=3)
    spec = standin.needed_specs(cfg, gan=False, fusion=True, vgg16=False)["fusion.backbone.pretrained"]
    data = standin.stand_in_data(cfg.pretrain, spec.size)
    whole = standin.train_standin(spec, cfg.pretrain, tmp_path / "whole.pth", torch.device("cpu"), data)
    real_ce, calls = torch.nn.functional.cross_entropy, {"n": 0}

    def dies_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 1:  # 3 steps per epoch (18 images, batch 6)
            raise KeyboardInterrupt
        return real_ce(*args, **kwargs)

    monkeypatch.setattr(standin.F, "cross_entropy", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        standin.train_standin(spec, cfg.pretrain, tmp_path / "killed.pth", torch.device("cpu"), data)
    assert (tmp_path / "killed.partial.pt").is_file() and not (tmp_path / "killed.pth").exists()
    monkeypatch.setattr(standin.F, "cross_entropy", real_ce)
    resumed = standin.train_standin(spec, cfg.pretrain, tmp_path / "killed.pth", torch.device("cpu"), data)
    a, b = torch.load(whole, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a) and not (tmp_path / "killed.partial.pt").exists()


def test_pretraining_learns_the_stand_in_identities(tmp_path):
    """Held-out top-1 over 8 identities at 64 x 32 after 10 epochs is far above chance (1/8);
    measured 0.875 (at 32 x 16 the persons are too small to tell apart: chance)."""
    import dataclasses

    cfg = _cfg(identities=8, images_per_identity=8, held_out_per_identity=2, epochs=10, batch_size=16)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=64, width=32))
    spec = standin.needed_specs(cfg, gan=False, fusion=True, vgg16=False)["fusion.backbone.pretrained"]
    path = standin.train_standin(spec, cfg.pretrain, tmp_path / "r.pth", torch.device("cpu"))
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["held_out_top1"] >= 0.5, record
    assert record["history"][-1]["loss"] < record["history"][0]["loss"]


def test_resolved_weights_load_through_the_torchvision_path(tmp_path):
    from stage2_fusion.methods import build_method

    cfg = standin.resolve_standins(_cfg(), torch.device("cpu"), cache_dir=tmp_path)
    assert cfg.fusion.backbone.pretrained.endswith(".pth") and cfg.fusion.vgg16.endswith(".pth") and cfg.gan.pretrained.endswith(".pth")
    state = torch.load(cfg.fusion.backbone.pretrained, weights_only=True)
    model, _ = build_method("mso", cfg, 4)
    own = model.state_dict()
    assert torch.equal(own["backbone.stems.vis.conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["backbone.stems.ir.conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["backbone.layer3.0.conv2.weight"], state["layer3.0.conv2.weight"])
    vgg = torch.load(cfg.fusion.vgg16, weights_only=True)
    assert torch.equal(own["edges.pef.stages.0.5.weight"], vgg["features.5.weight"])
    described = standin.describe_weights(cfg)
    assert described["fusion.vgg16"]["stand_in"] is True and len(described["fusion.backbone.pretrained"]["sha256"]) == 64


def test_unresolved_stand_in_is_a_clear_error():
    from stage2_fusion.methods import build_method

    with pytest.raises(UserError, match="'demo-standin' name the demo's ImageNet stand-in"):
        build_method("agw", _cfg(), 4)


@pytest.mark.slow
def test_run_all_starts_from_the_stand_in_and_records_it(tmp_path, monkeypatch):
    from pipelines.run_all import run_all

    monkeypatch.setenv("VIREID_CACHE", str(tmp_path / "cache"))
    root = make_sysu_tree(tmp_path / "SYSU-MM01", [1, 2, 3, 5], [9], [11, 12, 14])
    results = run_all(_cfg(), dataset="sysu", data_root=root, run_dir=tmp_path / "run", device=torch.device("cpu"), method="mso")
    weights = results["pretrained_weights"]
    assert weights["fusion.backbone.pretrained"]["path"].startswith(str(tmp_path / "cache" / "standin"))
    assert weights["fusion.vgg16"]["stand_in"] and weights["gan.pretrained"] == "demo-standin"  # mso trains no GAN
    assert "start_baseline" in results and "untrained_baseline" in results
    written = (tmp_path / "run" / "config.toml").read_text()
    assert weights["fusion.vgg16"]["path"] in written and 'pretrained = "demo-standin"' in written
