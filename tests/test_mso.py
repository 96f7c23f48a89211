"""MSO on the pipeline: edges at the stems of AGW (and TSME's real stream), PEF in training
only, CMCC on the BNNeck output, the edge choice recorded and checked."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from common.config import dump_config
from stage2_fusion.methods import load_config
from common.errors import UserError
from pipelines.cli import app
from stage2_fusion.methods import build_method
from stage2_fusion.methods.agw import agw_loss
from tests.conftest import TINY_OVERRIDES


def _cfg(method: str, **recipe):
    import copy

    o = copy.deepcopy(TINY_OVERRIDES)
    o["fusion"]["recipes"].setdefault(method, {}).update(recipe)
    return load_config("demo", overrides=o)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {"vis": torch.randn(2, 3, 32, 16, generator=g), "ir": torch.randn(2, 3, 32, 16, generator=g)}


def test_pef_is_computed_in_training_only_and_reaches_the_stems():
    torch.manual_seed(0)
    model, _ = build_method("mso", _cfg("mso", edge="sobel"), 3)
    out = model.train()(_inputs())
    assert out["pef"].ndim == 0 and out["pef"] > 0
    out["pef"].backward()
    assert model.backbone.stems["vis"].conv1.weight.grad.abs().sum() > 0  # PEF trains the stems
    assert model.edges.pef.stages[0][0].weight.grad.abs().sum() > 0  # and VGG16 (inside the model)
    assert "pef" not in model.eval()(_inputs())  # MSO: no edges at test time
    assert model.edges.operator == "sobel" and model.edges.mode == "mso"


def test_fused_edges_change_the_test_feature():
    torch.manual_seed(0)
    model, _ = build_method("agw", _cfg("agw", edge="laplace", edge_loss="fuse"), 3)
    model.eval()
    x = _inputs()
    before = model.extract({"vis": x["vis"]})
    with torch.no_grad():
        model.edges.embed.bn.weight.fill_(1.0)  # the zero-initialised embedding starts as a no-op
    after = model.extract({"vis": x["vis"]})
    assert not torch.allclose(before, after, atol=1e-4)
    plain, _ = build_method("agw", _cfg("agw"), 3)
    assert plain.edges is None and "pef" not in plain.train()(x)


def test_agw_loss_adds_pef_and_cmcc_with_their_weights():
    recipe = _cfg("mso", edge="sobel", pef_weight=0.5, cmcc_weight=2.0).fusion.recipe("mso")
    # two identities, one visible and one infrared row each, 1-d post-BN features:
    # id 0: c_v = 0, c_r = 2 -> d_in = 2, centre 1; id 1: c_v = 10, c_r = 10 -> d_in = 0, centre 10
    # d_out = |1 - 10| = 9 for both: CMCC = (log(1 + e^(2 - 9)) + log(1 + e^(0 - 9))) / 2 = 0.000518
    outputs = {"feat_pre_bn": torch.tensor([[0.0], [3.0], [1.0], [4.0]]), "feat_post_bn": torch.tensor([[0.0], [10.0], [2.0], [10.0]]),
               "logits": torch.zeros(4, 2), "pef": torch.tensor(3.0)}
    labels, is_ir = torch.tensor([0, 1, 0, 1]), torch.tensor([False, False, True, True])
    losses = agw_loss(outputs, labels, is_ir, recipe)
    cmcc = (torch.log1p(torch.exp(torch.tensor(-7.0))) + torch.log1p(torch.exp(torch.tensor(-9.0)))).item() / 2
    assert losses["cmcc"].item() == pytest.approx(cmcc, rel=1e-5)
    assert losses["pef"].item() == 3.0
    assert losses["total"].item() == pytest.approx(losses["id"].item() + losses["wrt"].item() + 0.5 * 3.0 + 2.0 * cmcc, rel=1e-6)


def test_tsme_edges_sit_on_the_real_stream_only():
    torch.manual_seed(0)
    model, _ = build_method("tsme", _cfg("tsme", edge="prewitt", edge_mode="magnitude", pef_stages=1), 3)
    model.train()
    x = _inputs()
    out = model(x, {k: v.flip(-1) for k, v in x.items()})
    assert out["pef"] > 0
    out["pef"].backward()
    assert model.real.stems["vis"].conv1.weight.grad.abs().sum() > 0
    assert model.generated.stems["vis"].conv1.weight.grad is None


def test_edge_configuration_is_checked():
    with pytest.raises(UserError, match="MSO is AGW with edge features"):
        _cfg("mso", edge="none")
    with pytest.raises(UserError, match="method glmn does not use edge"):
        _cfg("glmn", edge="sobel")
    with pytest.raises(UserError, match="edge 'canny' is unknown"):
        _cfg("agw", edge="canny")


@pytest.mark.e2e
def test_train_fusion_mso_sobel_then_test_records_and_checks_the_operator(sysu_tree, tiny_cfg, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_cfg))
    run = tmp_path / "mso"
    runner = CliRunner()
    res = runner.invoke(app, ["train-fusion", "--dataset", "sysu", "--data-root", str(sysu_tree), "--method", "mso", "--edge", "sobel",
                              "--config", str(config), "--run-dir", str(run), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "VGG16 starts from random initialisation" in res.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_pef"] > 0 and r["loss_cmcc"] >= 0 for r in records)
    ckpt = str(run / "fusion" / "reid.pt")
    res = runner.invoke(app, ["test", "--checkpoint", ckpt, "--dataset", "sysu", "--data-root", str(sysu_tree), "--trials", "2",
                              "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["edge"] == {"operator": "sobel", "mode": "mso", "loss": "pef", "vgg16": "random initialisation"}
    assert out["feature"] == "pre"  # MSO reports its pooled feature
    res = runner.invoke(app, ["test", "--checkpoint", ckpt, "--dataset", "sysu", "--data-root", str(sysu_tree), "--edge", "laplace"])
    assert res.exit_code != 0 and "trained with edge operator 'sobel', not 'laplace'" in str(res.exception)
