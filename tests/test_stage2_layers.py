import pytest
import torch

from common.config import load_config
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
    cfg = load_config("paper")
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


def test_pwif_gate_and_stripes():
    x = torch.rand(2, 4, 6, 3)
    gated = modality_gate(x)
    expected = x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True))
    assert torch.allclose(gated, expected)
    assert torch.allclose(pwif(x, 3 * x), 2 * x)
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
