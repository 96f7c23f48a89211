"""TSME's stage 2 as its code runs it: which maps reach which heads, the gate on the real
stream only (after layer3 and layer4), PwIF, 10 heads, and the 3072-d test descriptor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stage2_fusion.methods import load_config
from stage2_fusion.fusion import modality_gate
from stage2_fusion.methods.tsme import TSMENet

TINY = {"fusion": {"recipes": {"tsme": {"embed_dim": 16, "streams": "agw"}},  # paper layout: test_paper_streams_are_four_independent_resnets...
                   "backbone": {"layers": [1, 1, 1, 1], "base_width": 8, "nonlocal_blocks": [0, 0, 0, 0], "pretrained": "none"}}}


def _inputs(batch: int = 2, size=(32, 16)):
    g = torch.Generator().manual_seed(0)
    make = lambda: torch.randn(batch, 3, *size, generator=g)
    return {"vis": make(), "ir": make()}, {"vis": make(), "ir": make()}


def _capture(module: torch.nn.Module, store: dict, name: str, *, inputs: bool = False):
    if inputs:
        return module.register_forward_pre_hook(lambda m, args: store.__setitem__(name, args[0].detach().clone()))
    return module.register_forward_hook(lambda m, args, out: store.__setitem__(name, out.detach().clone()))


@pytest.fixture(scope="module")
def tiny_tsme():
    torch.manual_seed(0)
    return TSMENet(load_config("demo", overrides=TINY), num_classes=5).eval()


def test_gate_on_the_real_stream_after_layer3_and_layer4_only(tiny_tsme):
    model, seen = tiny_tsme, {}
    hooks = [
        # the stages run block by block: hook the last block of layer3 and the first/last of layer4
        _capture(model.real.layer3[-1], seen, "real_l3"), _capture(model.real.layer4[0], seen, "real_l4_in", inputs=True),
        _capture(model.real.layer4[-1], seen, "real_l4"), _capture(model.real, seen, "real_out"),
        _capture(model.generated.layer3[-1], seen, "gen_l3"), _capture(model.generated.layer4[0], seen, "gen_l4_in", inputs=True),
        _capture(model.generated.layer4[-1], seen, "gen_l4"), _capture(model.generated, seen, "gen_out"),
    ]
    with torch.no_grad():
        model(*_inputs())
    for h in hooks:
        h.remove()
    assert torch.allclose(seen["real_l4_in"], modality_gate(seen["real_l3"]), atol=1e-6)
    assert torch.allclose(seen["real_out"], modality_gate(seen["real_l4"]), atol=1e-6)
    assert not torch.allclose(seen["real_out"], seen["real_l4"], atol=1e-3)  # the gate does change the map
    assert torch.equal(seen["gen_l4_in"], seen["gen_l3"])  # generated stream: no gate
    assert torch.equal(seen["gen_out"], seen["gen_l4"])


def test_which_maps_reach_which_heads(tiny_tsme):
    model, seen = tiny_tsme, {}
    hooks = [_capture(model.real, seen, "real"), _capture(model.generated, seen, "gen"),
             _capture(model.fused_heads, seen, "fused_in", inputs=True), _capture(model.real_heads, seen, "real_in", inputs=True),
             _capture(model.generated_heads, seen, "gen_in", inputs=True)]
    inputs, partners = _inputs()
    with torch.no_grad():
        out = model(inputs, partners)
    for h in hooks:
        h.remove()
    assert torch.allclose(seen["fused_in"], (seen["real"] + seen["gen"]) / 2)  # PwIF: mean of gated real and generated
    assert torch.equal(seen["real_in"], seen["real"])  # IAI heads 7-8: the real map, both modalities
    assert torch.equal(seen["gen_in"], seen["gen"])  # IAI heads 9-10: the generated map
    # 6 fused-stripe heads + 2 real + 2 generated = TSME's 10 heads, rows visible first
    assert out["embeddings"].shape == (10, 4, 16) and out["logits"].shape == (10, 4, 5)
    # the generated stream sees the partners, routed by the source image's modality
    with torch.no_grad():
        swapped = model(inputs, {"vis": partners["ir"], "ir": partners["vis"]})
    assert not torch.allclose(swapped["embeddings"][8:], out["embeddings"][8:])
    assert torch.allclose(swapped["embeddings"][6:8], out["embeddings"][6:8])  # real heads do not see partners


def test_test_descriptor_is_the_six_normalised_fused_embeddings(tiny_tsme):
    model = tiny_tsme
    inputs, partners = _inputs()
    vis, pvis = {"vis": inputs["vis"]}, {"vis": partners["vis"]}
    desc = model.extract(vis, pvis, feature="post")
    assert desc.shape == (2, 6 * 16)
    with torch.no_grad():
        emb = model(vis, pvis)["embeddings"][:6]  # (6, B, 16): the fused heads' post-BN embeddings
    parts = F.normalize(emb.transpose(0, 1), dim=2).flatten(1)  # each part L2-normalised, concatenated
    assert torch.allclose(desc, parts / parts.norm(dim=1, keepdim=True), atol=1e-5)
    # "pre" (TSME's POOL5): the 6 pooled fused stripes of C = 256 channels
    assert model.extract(vis, pvis, feature="pre").shape == (2, 6 * 256)


def test_paper_descriptor_is_3072_d():
    cfg = load_config("paper", overrides={"fusion": {"backbone": TINY["fusion"]["backbone"]}})
    model = TSMENet(cfg, num_classes=3).eval()
    x = torch.randn(1, 3, 288, 144)
    assert model.extract({"ir": x}, {"ir": x}).shape == (1, 3072)  # 6 stripes x 512 (TSME --low-dim)


def test_paper_streams_are_four_independent_resnets_without_non_local_blocks():
    cfg = load_config("demo", overrides={**TINY, "fusion": {"recipes": {"tsme": {"embed_dim": 16, "streams": "paper"}},
                                                             "backbone": {**TINY["fusion"]["backbone"], "nonlocal_blocks": [0, 1, 1, 0]}}})
    model = TSMENet(cfg, num_classes=5).eval()
    nets = [model.real.nets["vis"], model.real.nets["ir"], model.generated.nets["vis"], model.generated.nets["ir"]]
    params = [{id(p) for p in net.parameters()} for net in nets]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not params[i] & params[j]  # nothing shared between the four ResNets
    names = {n for n, _ in model.named_modules()}
    assert not any("nonlocal" in n and n.split(".")[-1].isdigit() for n in names)  # TSME's ResNets have none
    assert nets[0].layer4[0].conv2.stride == (1, 1)  # last stride 1
    # a visible image and an infrared image go through different bodies
    x = torch.randn(1, 3, 32, 16)
    with torch.no_grad():
        assert not torch.allclose(model.real({"vis": x}), model.real({"ir": x}))
    agw = TSMENet(load_config("demo", overrides=TINY), num_classes=5)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(model.real) > 1.8 * n(agw.real)  # two bodies instead of one shared


def test_ablations_without_gate_and_without_iai_heads():
    nogate = TSMENet(load_config("demo", overrides={"fusion": {**TINY["fusion"], "recipes": {"tsme": {**TINY["fusion"]["recipes"]["tsme"], "gate": False}}}}),
                     num_classes=5).eval()
    seen = {}
    hooks = [_capture(nogate.real.layer4[-1], seen, "l4"), _capture(nogate.real, seen, "out"),
             _capture(nogate.real.layer3[-1], seen, "l3"), _capture(nogate.real.layer4[0], seen, "l4_in", inputs=True)]
    with torch.no_grad():
        nogate(*_inputs())
    for h in hooks:
        h.remove()
    assert torch.equal(seen["out"], seen["l4"]) and torch.equal(seen["l4_in"], seen["l3"])
    noiai = TSMENet(load_config("demo", overrides={"fusion": {**TINY["fusion"], "recipes": {"tsme": {**TINY["fusion"]["recipes"]["tsme"], "iai": False}}}}),
                    num_classes=5).eval()
    with torch.no_grad():
        out = noiai(*_inputs())
    assert out["embeddings"].shape == (6, 4, 16)  # the 6 fused heads only
    assert not hasattr(noiai, "real_heads") and noiai.head_modules() == [noiai.fused_heads]


def test_stripe_head_by_hand_and_its_initialisation():
    from stage2_fusion.fusion import StripeHead

    head = StripeHead(2, 2, 2).eval()
    with torch.no_grad():
        head.feature[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]])); head.feature[0].bias.zero_()
        bn = head.feature[1]
        bn.weight.fill_(1.0); bn.bias.zero_(); bn.running_mean.zero_(); bn.running_var.fill_(1.0)
        head.classifier[-1].weight.copy_(torch.eye(2)); head.classifier[-1].bias.zero_()
    # x = (3, 2): FeatureBlock -> (3, -2) / sqrt(1 + 1e-5); ClassBlock: LeakyReLU(0.1) -> (3, -0.2) / s; identity Linear
    s = (1 + 1e-5) ** 0.5
    emb, logits = head(torch.tensor([[3.0, 2.0]]))
    assert torch.allclose(emb, torch.tensor([[3.0, -2.0]]) / s, atol=1e-6)
    assert torch.allclose(logits, torch.tensor([[3.0, -0.2]]) / s, atol=1e-6)  # the embedding is taken before the LeakyReLU
    assert len(head.classifier) == 2  # no dropout by default (TSME --drop 0.0)
    assert isinstance(StripeHead(2, 2, 2, dropout=0.5).classifier[1], torch.nn.Dropout)
    # TSME's init: Kaiming fan_out linear (std sqrt(2 / 512)), BN weight N(1, 0.01), classifier N(0, 0.001), zero biases
    torch.manual_seed(0)
    big = StripeHead(1024, 512, 1000)
    assert big.feature[0].weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)
    assert big.feature[1].weight.mean().item() == pytest.approx(1.0, abs=0.003) and big.feature[1].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert big.classifier[-1].weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert not big.feature[0].bias.any() and not big.feature[1].bias.any() and not big.classifier[-1].bias.any()
