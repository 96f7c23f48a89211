"""MSO's losses (stage2_fusion.losses): CMCC by hand and against a transcription of MSO's
chunked version; PEF's value, gradients, weight loading and errors."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from common.errors import UserError
from stage2_fusion.losses import PerceptualEdgeLoss, cmcc_loss

# ---- CMCC --------------------------------------------------------------------------------

# Three identities, 2-D features:
#   id 0: visible (0, 0), (2, 0) -> c_v = (1, 0); infrared (1, 2) -> c_r = (1, 2); d_in = 2;   c̄ = (1, 1)
#   id 1: visible (4, 1) -> c_v = (4, 1);  infrared (4, 5) -> c_r = (4, 5);           d_in = 4;   c̄ = (4, 3)
#   id 2: visible (10, 10);  infrared (10, 11), (10, 13) -> c_r = (10, 12);           d_in = 2;   c̄ = (10, 11)
# centre distances: |c̄0 - c̄1| = sqrt(9 + 4) = 3.605551, |c̄0 - c̄2| = sqrt(81 + 100) = 13.453624,
#                   |c̄1 - c̄2| = sqrt(36 + 64) = 10
# d_out (closest other identity): id 0: 3.605551, id 1: 3.605551, id 2: 10
# per identity log(1 + exp(d_in - d_out)):
#   id 0: log(1 + exp(-1.605551)) = log(1 + 0.200779) = 0.182970
#   id 1: log(1 + exp(0.394449))  = log(1 + 1.483566) = 0.909695
#   id 2: log(1 + exp(-8))        = 0.000335
# mean = (0.182970 + 0.909695 + 0.000335) / 3 = 0.364334
FEATS = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0], [4.0, 1.0], [4.0, 5.0], [10.0, 10.0], [10.0, 11.0], [10.0, 13.0]])
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
IS_IR = torch.tensor([False, False, True, False, True, False, True, True])
EXPECTED = 0.364334


def test_cmcc_by_hand_three_identities():
    loss = cmcc_loss(FEATS, LABELS, IS_IR)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(EXPECTED, abs=1e-5)


def test_cmcc_two_identities_by_hand():
    # ids 0 and 1 only: d_out = 3.605551 for both -> (0.182970 + 0.909695) / 2 = 0.546333
    keep = LABELS < 2
    assert cmcc_loss(FEATS[keep], LABELS[keep], IS_IR[keep]).item() == pytest.approx(0.546333, abs=1e-5)


def test_cmcc_groups_by_label_whatever_the_batch_order():
    perm = torch.tensor([7, 2, 4, 0, 5, 1, 6, 3])
    assert cmcc_loss(FEATS[perm], LABELS[perm], IS_IR[perm]).item() == pytest.approx(EXPECTED, abs=1e-5)


def test_cmcc_leaves_out_identities_seen_in_one_modality():
    # id 3 only visible, id 4 only infrared, both sitting on c̄0 = (1, 1): as candidates for
    # d_out they would pull id 0's d_out to 0; left out, the loss is the 3-identity value.
    feats = torch.cat([FEATS, torch.tensor([[1.0, 1.0], [1.0, 1.0]])])
    labels = torch.cat([LABELS, torch.tensor([3, 4])])
    is_ir = torch.cat([IS_IR, torch.tensor([False, True])])
    assert cmcc_loss(feats, labels, is_ir).item() == pytest.approx(EXPECTED, abs=1e-5)


def test_cmcc_one_complete_identity_is_zero_with_finite_gradient():
    feats = FEATS[:3].clone().requires_grad_(True)
    loss = cmcc_loss(feats, LABELS[:3], IS_IR[:3])
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(feats.grad).all()


def _mso_cmcc_transcription(feats, label_num):
    """Independent plain transcription of cjjjao/DIP_work:loss.py ``CMCC.forward`` on an
    AGW-ordered batch (P visible blocks of K, then the same P identities in infrared)."""
    chunks = feats.chunk(label_num * 2, 0)
    c_v = torch.stack([chunks[i].mean(0) for i in range(label_num)])
    c_r = torch.stack([chunks[i + label_num].mean(0) for i in range(label_num)])
    d_intra = ((c_v ** 2).sum(1) + (c_r ** 2).sum(1) - 2 * (c_v * c_r).sum(1)).clamp(min=1e-12).sqrt()
    centre = (c_v + c_r) / 2
    sq = (centre ** 2).sum(1, keepdim=True)
    dist = (sq + sq.t() - 2 * centre @ centre.t()).clamp(min=1e-12).sqrt()
    d_inter = torch.stack([dist[i][torch.arange(label_num) != i].min() for i in range(label_num)])
    return torch.log(1 + torch.exp(d_intra - d_inter)).mean()


def test_cmcc_equals_msos_chunked_version_on_agw_batches_and_has_gradients():
    torch.manual_seed(0)
    p, k, d = 4, 3, 6
    ids = torch.tensor([7, 2, 9, 4])  # sampler order, not sorted
    labels = torch.cat([ids.repeat_interleave(k), ids.repeat_interleave(k)])
    is_ir = torch.cat([torch.zeros(p * k, dtype=torch.bool), torch.ones(p * k, dtype=torch.bool)])
    feats = torch.randn(2 * p * k, d, requires_grad=True)
    ours = cmcc_loss(feats, labels, is_ir)
    torch.testing.assert_close(ours, _mso_cmcc_transcription(feats.detach(), p), rtol=1e-5, atol=1e-6)
    ours.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_cmcc_shape_errors():
    with pytest.raises(ValueError):
        cmcc_loss(FEATS, LABELS[:-1], IS_IR)
    with pytest.raises(ValueError):
        cmcc_loss(FEATS, LABELS, IS_IR[:-1])
    with pytest.raises(ValueError):
        cmcc_loss(FEATS.view(-1), LABELS, IS_IR)


# ---- PEF ----------------------------------------------------------------------------------

def _tiny_pef(seed=0):
    torch.manual_seed(seed)
    return PerceptualEdgeLoss(None, width_divisor=8)  # stem width 8, VGG widths 8-16-32-64-64


def test_pef_is_zero_when_both_branches_see_the_same_map_and_positive_otherwise():
    pef = _tiny_pef()
    edge = torch.randn(2, 1, 16, 16)
    same = pef(edge.repeat(1, 8, 1, 1), edge)  # the stem map equals the edge repeated to 8 channels
    assert same.item() == 0.0
    assert pef(torch.randn(2, 8, 16, 16), edge).item() > 0


def test_pef_gradients_reach_stem_and_every_vgg_stage_but_not_the_edge():
    pef = _tiny_pef(1)
    assert all(p.requires_grad for p in pef.parameters())
    stem = torch.randn(2, 8, 16, 16, requires_grad=True)
    edge = torch.randn(2, 1, 16, 16, requires_grad=True)
    pef(stem, edge).backward()
    assert stem.grad.abs().sum() > 0
    assert edge.grad is None  # MSO builds the edge map under no_grad
    for stage in pef.stages:
        first_conv = next(m for m in stage if isinstance(m, torch.nn.Conv2d))
        assert first_conv.weight.grad.abs().sum() > 0


def test_pef_returns_float32_under_bf16_autocast():
    pef = _tiny_pef()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pef(torch.randn(1, 8, 16, 16), torch.randn(1, 1, 16, 16))
    assert loss.dtype == torch.float32 and loss.item() > 0


def test_pef_loads_torchvision_vgg16_slices_5_to_30(tmp_path):
    # a torchvision VGG16 "features" state dict, saved as torchvision's file is keyed
    torch.manual_seed(2)
    features = make_layers(cfgs["D"])
    path = tmp_path / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    pef = PerceptualEdgeLoss(str(path))
    assert pef.in_channels == 64
    convs = [i for i in range(5, 31) if isinstance(features[i], torch.nn.Conv2d)]
    assert convs == [5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    own = dict(pef.named_parameters())
    for stage, (a, b) in enumerate(((5, 10), (10, 17), (17, 24), (24, 31))):
        for i in (c for c in convs if a <= c < b):
            assert torch.equal(own[f"stages.{stage}.{i}.weight"], features[i].weight)
            assert torch.equal(own[f"stages.{stage}.{i}.bias"], features[i].bias)
    # nothing else is kept: layers 0-4 (which see RGB) and the classifier are not part of PEF
    assert sum(p.numel() for p in pef.parameters()) == sum(features[i].weight.numel() + features[i].bias.numel() for i in convs)


def test_pef_loads_narrow_vgg16_weights_of_its_own_width(tmp_path):
    """A torchvision-layout VGG16 at half width (the demo's stand-in) loads into a
    width_divisor-2 PEF exactly as torchvision's file does into the paper width."""
    torch.manual_seed(4)
    features = make_layers([c // 2 if isinstance(c, int) else c for c in cfgs["D"]])
    path = tmp_path / "vgg16-w32.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    pef = PerceptualEdgeLoss(str(path), width_divisor=2, num_stages=3)
    assert pef.in_channels == 32
    assert torch.equal(pef.stages[0].get_submodule("5").weight, features[5].weight)
    assert torch.equal(pef.stages[2].get_submodule("21").bias, features[21].bias)


def test_pef_chains_msos_four_slices_and_trains_vgg_through_both_branches():
    # Independent transcription of PEF.py with torchvision's make_layers at 1/8 width, its
    # weights copied in by torchvision index: both branches chained through features[5:10],
    # [10:17], [17:24], [24:31]; loss = sum of the 4 mean squared errors; no detach after VGG.
    torch.manual_seed(3)
    features = make_layers([c // 8 if isinstance(c, int) else c for c in cfgs["D"]])
    pef = PerceptualEdgeLoss(None, width_divisor=8)
    slices = ((5, 10), (10, 17), (17, 24), (24, 31))
    pef.load_state_dict({f"stages.{s}.{k}": v for s, (a, b) in enumerate(slices) for k, v in features.state_dict().items() if a <= int(k.split(".")[0]) < b})
    stem = torch.rand(2, 8, 16, 16)
    edge = torch.randn(2, 1, 16, 16)
    x, e, expected = stem, edge.repeat(1, 8, 1, 1), 0.0
    for a, b in slices:
        x, e = features[a:b](x), features[a:b](e)
        expected = expected + F.mse_loss(x, e)
    got = pef(stem, edge)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    expected.backward()
    got.backward()
    for stage, i in ((0, "5"), (1, "14"), (3, "28")):
        torch.testing.assert_close(pef.stages[stage].get_submodule(i).weight.grad, features[int(i)].weight.grad, rtol=1e-4, atol=1e-7)


def test_pef_weight_errors(tmp_path):
    missing = tmp_path / "vgg16-397923af.pth"
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth.*https://download\.pytorch\.org/models/vgg16-397923af\.pth"):
        PerceptualEdgeLoss(str(missing))
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match="not a torchvision VGG16"):
        PerceptualEdgeLoss(str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        PerceptualEdgeLoss(str(garbage))
    full = tmp_path / "vgg16-full.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, full)
    with pytest.raises(UserError, match=r"do not fit PEF's VGG16 for a 32-channel stem .*features\.5\.weight: \(128, 64, 3, 3\) in the file, \(64, 32, 3, 3\)"):
        PerceptualEdgeLoss(str(full), width_divisor=2)
    with pytest.raises(ValueError):
        PerceptualEdgeLoss(None, width_divisor=3)
    with pytest.raises(ValueError):
        PerceptualEdgeLoss(None, width_divisor=0)


def test_pef_shape_errors():
    pef = _tiny_pef()
    with pytest.raises(ValueError):
        pef(torch.randn(1, 64, 16, 16), torch.randn(1, 1, 16, 16))  # 64 channels into a width-8 VGG
    with pytest.raises(ValueError):
        pef(torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16))  # edge must be 1 channel
    with pytest.raises(ValueError):
        pef(torch.randn(1, 8, 16, 16), torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError):
        pef(torch.randn(1, 8, 16, 16), torch.randn(1, 1, 16, 8))

