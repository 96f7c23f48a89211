import pytest
import torch

from stage2_fusion.methods import load_config
from stage2_fusion.backbone import AGWBackbone, build_backbone
from stage2_fusion.fusion import modality_gate, pwif, stripes
from stage2_fusion.layers import BNNeck, GeM, NonLocalBlock


def test_gem_with_p1_is_average_pooling_and_p3_is_between_mean_and_max():
    x = torch.rand(2, 3, 4, 5)
    assert torch.allclose(GeM(1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)
    g3 = GeM(3.0)(x)
    assert (g3 >= x.mean(dim=(2, 3)) - 1e-6).all() and (g3 <= x.amax(dim=(2, 3)) + 1e-6).all()
    # hand example: values 1 and 2 -> ((1 + 8) / 2)^(1/3) = 4.5^(1/3)
    assert GeM(3.0)(torch.tensor([[[[1.0, 2.0]]]])).item() == pytest.approx(4.5 ** (1 / 3), rel=1e-6)


def test_bnneck_bias_is_frozen_at_zero_and_classifier_has_no_bias():
    neck = BNNeck(6, 4)
    assert not neck.bn.bias.requires_grad and neck.classifier.bias is None
    opt = torch.optim.SGD([p for p in neck.parameters() if p.requires_grad], lr=1.0)
    feat, logits = neck(torch.randn(5, 6))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0])).backward()
    opt.step()
    assert torch.equal(neck.bn.bias, torch.zeros(6))
    assert feat.shape == (5, 6) and logits.shape == (5, 4)


def test_nonlocal_starts_as_identity_and_inter_channels():
    x = torch.randn(2, 8, 3, 4)
    assert torch.equal(NonLocalBlock(8)(x), x)  # zero-initialised BN in W
    assert NonLocalBlock(8, 1).inter_channels == 1 and NonLocalBlock(8, 0).inter_channels == 4


def test_nonlocal_placement_follows_agw_by_module_name():
    cfg = load_config("paper", overrides={"fusion": {"backbone": {"pretrained": "none"}}})
    backbone = build_backbone(cfg.fusion.backbone)
    names = {n for n, _ in backbone.named_modules()}
    assert {"nonlocal_layer2.0", "nonlocal_layer2.1", "nonlocal_layer3.0", "nonlocal_layer3.1", "nonlocal_layer3.2"} <= names
    assert "nonlocal_layer1.0" not in names and "nonlocal_layer4.0" not in names and "nonlocal_layer2.2" not in names
    # after the last 2 of layer2's 4 blocks and the last 3 of layer3's 6 blocks (AGW non_layers = [0, 2, 3, 0])
    assert backbone.nonlocal_after["layer2"] == [2, 3] and backbone.nonlocal_after["layer3"] == [3, 4, 5]
    # modality-specific stems, shared body, torchvision names
    assert {"stems.vis.conv1", "stems.ir.conv1", "layer4.2.conv3"} <= names
    assert backbone.layer4[0].conv2.stride == (1, 1)  # last stride 1


def test_backbone_output_shape_and_modality_specific_stems():
    bb = AGWBackbone(("vis", "ir"), (1, 1, 1, 1), 8, 1, (0, 1, 1, 0))
    out = bb({"vis": torch.randn(2, 3, 32, 16), "ir": torch.randn(3, 3, 32, 16)})
    assert out.shape == (5, 256, 2, 1)
    assert bb.stems["vis"].conv1.weight.data_ptr() != bb.stems["ir"].conv1.weight.data_ptr()


def test_gate_by_hand_and_pwif():
    # channel 0 = [1, 3]: GAP 2, GMP 3 -> x * sigmoid(5) = [0.993307, 2.979920]
    # channel 1 = [-2, 0]: GAP -1, GMP 0 -> x * sigmoid(-1) = [-0.537883, 0]
    x = torch.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]]])
    gated = modality_gate(x)
    assert torch.allclose(gated, torch.tensor([[[[0.993307, 2.979920]], [[-0.537883, 0.0]]]]), atol=1e-6)
    # PwIF: element-wise mean of the real and generated maps
    a, b = torch.tensor([[[[1.0, 4.0]]]]), torch.tensor([[[[3.0, -2.0]]]])
    assert torch.equal(pwif(a, b), torch.tensor([[[[2.0, 1.0]]]]))
    x = torch.rand(2, 4, 6, 3)
    s = stripes(x, 3)  # rows 0-1, 2-3, 4-5
    assert s.shape == (2, 3, 4)
    assert torch.allclose(s[:, 1], x[:, :, 2:4].mean(dim=(2, 3)))
    with pytest.raises(ValueError):
        pwif(x, x[:, :2])


def test_gem_matches_agw_formula_and_does_not_overflow():
    x = torch.rand(2, 3, 4, 5) * 10
    agw = (x.flatten(2).pow(3).mean(-1) + 1e-12).pow(1 / 3)
    assert torch.allclose(GeM(3.0)(x), agw, rtol=1e-5)
    assert torch.allclose(GeM(3.0)(torch.zeros(1, 2, 2, 2)), torch.full((1, 2), 1e-4), rtol=1e-4)
    big = torch.full((1, 1, 2, 2), 1e15)
    assert torch.isfinite(GeM(3.0)(big)).all() and GeM(3.0)(big).item() == pytest.approx(1e15, rel=1e-5)


def test_nonlocal_forward_by_hand():
    # C = 2, inter = 1, one row of N = 2 positions: x_0 = (1, 0), x_1 = (2, 1).
    # theta = x[0] -> (1, 2); phi = x[1] + 1 -> (1, 2); g = x[0] + x[1] -> (1, 3).
    # f = theta^T phi / N = [[1, 2], [2, 4]] / 2; y = f g = (0.5 + 3, 1 + 6) = (3.5, 7)
    # W: conv (1 -> 2) weight (1, -1), bias (0, 0.5) -> (3.5, 7) and (-3, -6.5); BN (eval, unit
    # stats) divides by sqrt(1 + 1e-5); z = x + W(y).
    block = NonLocalBlock(2, 1).eval()
    with torch.no_grad():
        block.theta.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)); block.theta.bias.zero_()
        block.phi.weight.copy_(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)); block.phi.bias.fill_(1.0)
        block.g.weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)); block.g.bias.zero_()
        block.W[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)); block.W[0].bias.copy_(torch.tensor([0.0, 0.5]))
        block.W[1].weight.fill_(1.0); block.W[1].bias.zero_()
    x = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])
    s = (1 + 1e-5) ** 0.5
    expected = torch.tensor([[[[1 + 3.5 / s, 2 + 7 / s]], [[-3 / s, 1 - 6.5 / s]]]])
    assert torch.allclose(block(x), expected, atol=1e-5)


class _FixedMap(torch.nn.Module):
    """Stands in for a backbone: returns a fixed (B, C, 1, 2) map for any input."""

    def __init__(self, fmap):
        super().__init__()
        self.fmap = fmap

    def forward(self, inputs, *hooks, **kw):
        b = sum(x.shape[0] for x in inputs.values())
        return self.fmap.expand(b, -1, -1, -1).clone()


def _agw_with_fixed_map(fmap):
    from stage2_fusion.methods.agw import AGWNet

    cfg = load_config("demo", overrides={"fusion": {"backbone": {"layers": [1, 1, 1, 1], "base_width": 8, "pretrained": "none"}}})
    model = AGWNet(cfg, 3)
    model.backbone = _FixedMap(fmap)
    model.bnneck = BNNeck(fmap.shape[1], 3)
    return model


def test_agw_pools_with_gem_p3_and_tests_the_post_bn_feature():
    # channel 0 holds 1 and 2: GeM p = 3 gives ((1 + 8) / 2)^(1/3) = 1.650964 (p = 1 would give 1.5)
    # channel 1 holds 2 and 2: 2
    model = _agw_with_fixed_map(torch.tensor([[[[1.0, 2.0]], [[2.0, 2.0]]]])).eval()
    with torch.no_grad():
        model.bnneck.bn.running_mean.copy_(torch.tensor([1.650964, 0.0]))
        model.bnneck.bn.running_var.fill_(1.0)
        model.bnneck.bn.weight.fill_(1.0)
    x = {"vis": torch.zeros(1, 3, 32, 16)}
    out = model(x)
    assert torch.allclose(out["feat_pre_bn"], torch.tensor([[1.650964, 2.0]]), atol=1e-5)
    # post-BN: (pre - running mean) / sqrt(var + eps) = (0, 2 / 1.000005) -> L2-normalised (0, 1)
    assert torch.allclose(model.extract(x, feature="post"), torch.tensor([[0.0, 1.0]]), atol=1e-5)
    # pre-BN ("pool"): (1.650964, 2) / 2.593392
    assert torch.allclose(model.extract(x, feature="pre"), torch.tensor([[0.636604, 0.771191]]), atol=1e-5)


def test_bnneck_initialisation_is_agws_weights_init_kaiming_and_classifier():
    # AGW model.py: BatchNorm1d weight ~ N(1, 0.01), bias 0; classifier weight ~ N(0, 0.001)
    torch.manual_seed(0)
    neck = BNNeck(4096, 8)
    w = neck.bn.weight.detach()
    assert abs(w.mean().item() - 1.0) < 1e-3 and 0.008 < w.std().item() < 0.012
    assert torch.count_nonzero(neck.bn.bias) == 0
    c = neck.classifier.weight.detach()
    assert abs(c.mean().item()) < 1e-4 and 0.0008 < c.std().item() < 0.0012
