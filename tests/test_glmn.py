"""GLMN (cq0907/GFMNet): network, losses, flip test-time augmentation, batched CAJ views.

Hand computations are written out next to each expectation; cross-checks against G's
released code are plain transcriptions of it (loops over Python floats)."""

from __future__ import annotations

import dataclasses

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.data.augment import CAJ_ERASE_FILL, adaptive_gray_caj, imagenet_normalize, random_erasing
from stage2_fusion.methods import load_config
from common.errors import UserError
from common.nets.resnet import Stem, make_layers
from stage2_fusion.methods.glmn import (
    AFAM,
    ChannelAttention,
    GLMNAugment,
    GLMNNet,
    LocalBranch,
    SpatialAttention,
    ADP_CLAMP,
    aligned_local_distance,
    aligned_local_triplet_loss,
    glmn_loss,
    greedy_alignment_distance,
    hard_example_indices,
    stripe_distance,
    stripe_max_pool,
)
from stage2_fusion.losses import adp_triplet_loss as adp_triplet_loss_any_clamp
from tests.conftest import TINY_OVERRIDES


def adp_triplet_loss(*args, **kwargs):
    """GLMN's ADP: the shared loss with GLMN's clamp (44)."""
    return adp_triplet_loss_any_clamp(*args, clamp=ADP_CLAMP, **kwargs)

#: The paper profile's glmn recipe (id_weight 1, ...), for the loss tests.
RECIPE = load_config("paper").fusion.recipe("glmn")

H, W = 32, 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing the shared CPU cores (10x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(**backbone):
    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["fusion"]["backbone"].update(backbone)
    return load_config("demo", overrides=overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GLMNNet(_cfg(), num_classes=5)


def _inputs(n=2, m=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(b, 3, H, W, generator=g) for k, b in (("vis", n), ("vis_ca", n), ("ir", m))}


# ----------------------------------------------------------------------------- network


def test_forward_and_extract_shapes(model):
    model.train()
    out = model(_inputs(n=2, m=3))
    # 2 vis + 2 vis_ca + 3 ir rows; base width 8 -> 32 * 8 = 256 channels; 6 stripes x 128
    assert out["feat_pre_bn"].shape == (7, 256) and out["feat_post_bn"].shape == (7, 256)
    assert out["logits"].shape == (7, 5)
    assert out["local"].shape == (7, 6, 128)
    assert torch.allclose(out["local"].norm(dim=2), torch.ones(7, 6), atol=1e-5)
    # loop batch [vis0, vis1, ir0, ir1, ir2]: vis_ca rows repeat the visible images' rows
    assert out["row_index"].tolist() == [0, 1, 0, 1, 2, 3, 4]
    model.eval()
    for name in ("vis", "ir"):
        for feature in ("pre", "post"):
            f = model.extract({name: torch.randn(3, 3, H, W)}, feature=feature)
            assert f.shape == (3, 256) and f.dtype == torch.float32
            assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)


def test_gradients_reach_both_modalities_attention_and_both_branches():
    torch.manual_seed(0)
    net = GLMNNet(_cfg(), num_classes=3)
    net.train()
    labels, is_ir = torch.tensor([0, 1, 0, 1]), torch.tensor([False, False, True, True])
    out = net(_inputs())
    glmn_loss(out, labels, is_ir, RECIPE)["total"].backward()
    params = dict(net.named_parameters())
    for name in ("specific.vis.stem.conv1.weight", "specific.vis.layer1.0.conv2.weight",
                 "specific.ir.stem.conv1.weight", "specific.ir.layer1.0.conv2.weight",
                 "afam.channel_attention.fc1.weight", "afam.channel_attention.fc2.weight",
                 "afam.spatial_attention.conv.weight", "afam.non_local.W.1.weight",
                 "layer2.0.conv1.weight", "layer4.0.conv3.weight",
                 "bnneck.classifier.weight", "local.conv.weight", "local.bn.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name

    # the local branch alone trains the shared and modality-specific layers, not the classifier
    net.zero_grad(set_to_none=True)
    out = net(_inputs())
    labels6 = labels[out["row_index"]]
    aligned_local_triplet_loss(out["local"], torch.cdist(out["feat_pre_bn"], out["feat_pre_bn"]), labels6).backward()
    assert params["layer4.0.conv3.weight"].grad.abs().sum() > 0
    assert params["specific.ir.stem.conv1.weight"].grad.abs().sum() > 0
    assert params["bnneck.classifier.weight"].grad is None
    # and the identity loss alone does not touch the local branch
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(_inputs())["logits"], labels6).backward()
    assert params["local.conv.weight"].grad is None and params["afam.spatial_attention.conv.weight"].grad.abs().sum() > 0


def test_channel_attention_by_hand():
    ca = ChannelAttention(16)  # hidden 16 // 16 = 1
    with torch.no_grad():
        ca.fc1.weight.zero_()
        ca.fc1.weight[0, 0] = 1.0  # hidden unit = channel 0's pooled value
        ca.fc2.weight.copy_((torch.arange(16.0) / 8).view(16, 1, 1, 1))  # output c = c/8 * hidden
    x = torch.zeros(1, 16, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, -10.0]])
    # avg of channel 0 = (1 + 2 + 3 - 10) / 4 = -1 -> relu 0; max = 3 -> relu 3
    # a_c = sigmoid(c/8 * 0 + c/8 * 3) = sigmoid(3c/8)  (relu before fc2 on each path separately)
    expected = torch.sigmoid(3 * torch.arange(16.0) / 8).view(1, 16, 1, 1)
    assert torch.allclose(ca(x), expected, atol=1e-6)


def test_spatial_attention_by_hand():
    sa = SpatialAttention()
    with torch.no_grad():
        sa.conv.weight.zero_()
        sa.conv.weight[0, 0, 3, 3] = 0.5  # centre tap on the channel mean
        sa.conv.weight[0, 1, 3, 3] = 1.0  # centre tap on the channel max
        sa.conv.weight[0, 1, 3, 4] = 2.0  # right-hand neighbour's max (zero padding at the edge)
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): channels [1, -2] and [3, 0]
    # mean over channels = [2, -1], max = [3, 0]
    # position 0: 0.5*2 + 3 + 2*max(pos 1)=0 -> 4 -> sigmoid 0.982014
    # position 1: 0.5*(-1) + 0 + 2*padding 0 -> -0.5 -> sigmoid 0.377541
    assert torch.allclose(sa(x), torch.tensor([[[[0.982014, 0.377541]]]]), atol=1e-6)


def test_afam_averages_parallel_attentions_then_applies_non_local():
    torch.manual_seed(0)
    afam = AFAM(16)
    with torch.no_grad():
        afam.channel_attention.fc2.weight.zero_()  # channel weights sigmoid(0) = 0.5
        afam.spatial_attention.conv.weight.zero_()  # spatial weights 0.5
    x = torch.randn(2, 16, 4, 2)
    # non-local starts as the identity (zero-initialised W BatchNorm):
    # (0.5 x + 0.5 x) / 2 = 0.5 x  (a sequential CA then SA would give 0.25 x, no halving x)
    assert torch.allclose(afam(x), 0.5 * x, atol=1e-6)
    with torch.no_grad():
        afam.non_local.W[1].weight.fill_(1.0)
    afam.eval()
    assert not torch.allclose(afam(x), 0.5 * x, atol=1e-3)
    assert torch.allclose(afam(x), afam.non_local(0.5 * x), atol=1e-6)  # non-local after the averaging


def test_stripe_max_pool_by_hand_and_as_g_kernel_at_18_rows():
    x = torch.tensor([[1.0, 5.0], [2.0, -1.0], [0.0, 0.0], [-3.0, -2.0], [7.0, 1.0], [4.0, 9.0]]).view(1, 1, 6, 2)
    # 3 stripes of 2 rows: max(1, 5, 2, -1) = 5, max(0, 0, -3, -2) = 0, max(7, 1, 4, 9) = 9
    assert stripe_max_pool(x, 3).flatten().tolist() == [5.0, 0.0, 9.0]
    fmap = torch.randn(2, 4, 18, 9)  # layer4 map at 288 x 144
    g_pool = F.max_pool2d(fmap, kernel_size=(3, 9))  # G HorizontalMaxPool2d: kernel (3, W)
    assert torch.equal(stripe_max_pool(fmap, 6), g_pool)


def test_local_branch_bn_relu_pool_conv_then_l2_by_hand():
    branch = LocalBranch(2, num_stripes=2, local_dim=2).eval()  # fresh BN: x / sqrt(1 + 1e-5)
    with torch.no_grad():
        branch.conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]).view(2, 2, 1, 1))
        branch.conv.bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.tensor([[[-1.0, 0.5], [3.0, 1.0]], [[2.0, 1.0], [4.0, 6.0]]]).unsqueeze(0)  # (1, 2, 2, 2)
    # relu + max over each row: stripe 0 = (0.5, 2), stripe 1 = (3, 6)
    # conv: (0.5 + 1, -2) = (1.5, -2) -> / 2.5 = (0.6, -0.8); (3 + 1, -6) -> / sqrt(52) = (0.5547, -0.83205)
    # (a conv before the pooling would give stripe 0 = max((1, -2), (1.5, -1)) = (1.5, -1))
    expected = torch.tensor([[[0.6, -0.8], [0.5547002, -0.8320503]]])
    assert torch.allclose(branch(x), expected, atol=1e-4)


def test_head_modules_are_the_bnneck_only(model):
    assert model.head_modules() == [model.bnneck]  # G: only bottleneck + classifier at full lr


def test_layer1_non_local_blocks_are_refused():
    with pytest.raises(UserError, match="nonlocal_blocks"):
        GLMNNet(_cfg(nonlocal_blocks=[1, 1, 1, 0]), num_classes=3)


class _TorchvisionNamed(nn.Module):
    """A ResNet with torchvision's parameter names (conv1, bn1, layer1..4) at tiny widths."""

    def __init__(self, width, layers):
        super().__init__()
        stem = Stem(width)
        self.conv1, self.bn1 = stem.conv1, stem.bn1
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(width, layers, 1)


def test_load_imagenet_fills_both_modalities_and_the_shared_body(tmp_path):
    torch.manual_seed(0)
    source = _TorchvisionNamed(8, (1, 1, 1, 3))  # layer4.2 exists, as the loader checks
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = tmp_path / "resnet50-fake.pth"
    torch.save(state, path)
    net = GLMNNet(_cfg(layers=[1, 1, 1, 3], pretrained=str(path)), num_classes=3)
    own = net.state_dict()
    for m in ("vis", "ir"):
        assert torch.equal(own[f"specific.{m}.stem.conv1.weight"], state["conv1.weight"])
        assert torch.equal(own[f"specific.{m}.stem.bn1.running_var"], state["bn1.running_var"])
        assert torch.equal(own[f"specific.{m}.layer1.0.conv2.weight"], state["layer1.0.conv2.weight"])
    assert torch.equal(own["layer3.0.downsample.0.weight"], state["layer3.0.downsample.0.weight"])
    assert torch.equal(own["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    assert torch.count_nonzero(own["afam.non_local.W.1.weight"]) == 0  # untouched, still zero-initialised
    stem_layer1 = sum(k.startswith(("conv1.", "bn1.", "layer1.")) for k in state)
    assert net.load_imagenet(str(path)) == (len(state) - stem_layer1) + 2 * stem_layer1


# ----------------------------------------------------------------------------- flip test-time augmentation


def test_flip_tta_symmetric_input_equals_plain_feature_and_extract_is_flip_invariant(model):
    model.eval()
    torch.manual_seed(3)
    x = torch.randn(3, 3, H, W)
    symmetric = x + x.flip(-1)
    for feature in ("pre", "post"):
        plain = model.extract({"vis": symmetric}, feature=feature, flip=False)
        assert torch.allclose(model.extract({"vis": symmetric}, feature=feature), plain, atol=1e-5)
        tta, tta_flipped = model.extract({"ir": x}, feature=feature), model.extract({"ir": x.flip(-1)}, feature=feature)
        assert torch.allclose(tta, tta_flipped, atol=1e-5)
        # without the flip the network itself is not flip-invariant, so the check above has teeth
        assert not torch.allclose(model.extract({"ir": x}, feature=feature, flip=False),
                                  model.extract({"ir": x.flip(-1)}, feature=feature, flip=False), atol=1e-3)


def test_flip_tta_is_gs_average_of_normalised_features(model):
    # G testa.py: feat, feat_flip = l2(net(x)), l2(net(flip x)); (feat + feat_flip) / 2, then l2
    model.eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        a = F.normalize(model({"vis": x})["feat_post_bn"], dim=1)
        b = F.normalize(model({"vis": x.flip(-1)})["feat_post_bn"], dim=1)
    assert torch.allclose(model.extract({"vis": x}), F.normalize((a + b) / 2, dim=1), atol=1e-5)


def test_extract_rejects_bad_feature_and_streams(model):
    model.eval()
    x = torch.randn(1, 3, H, W)
    with pytest.raises(ValueError, match="feature"):
        model.extract({"vis": x}, feature="local")
    with pytest.raises(ValueError, match="one stream"):
        model.extract({"vis_ca": x})
    with pytest.raises(ValueError, match="one stream"):
        model.extract({"vis": x, "ir": x})


# ----------------------------------------------------------------------------- aligned local distance


def _g_shortest_dist1(m):
    """Plain transcription of G aligned/local_dist.py ``shortest_dist1`` for one matrix."""
    rows, cols = len(m), len(m[0])
    total, j, k, stride = m[0][0], 0, 0, 0
    while not (j == rows - 1 and k == cols - 1):
        stride += 1
        right = None if k == rows - 1 else min(range(cols - k - 1), key=lambda t: m[j][k + 1 + t])
        down = None if j == cols - 1 else min(range(rows - j - 1), key=lambda t: m[j + 1 + t][k])
        if right is None:
            total += m[j + 1 + down][k]
            j += 1 + down
        elif down is None:
            total += m[j][k + 1 + right]
            k += 1 + right
        elif m[j][k + 1 + right] > m[j + 1 + down][k]:
            total += m[j + 1 + down][k]
            j += 1 + down
        else:
            total += m[j][k + 1 + right]
            k += 1 + right
    return total / stride


def test_greedy_alignment_by_hand():
    cost = torch.tensor([
        # (0,0)=0.1; right best 0.2 at col 2, down best 0.3 at row 1: 0.2 <= 0.3 -> jump right to (0,2);
        # last column: down to the cheaper of rows 1, 2: 0.6 at (2,2). (0.1 + 0.2 + 0.6) / 2 jumps = 0.45
        [[0.1, 0.5, 0.2], [0.3, 0.9, 0.9], [0.8, 0.4, 0.6]],
        # right best 0.6, down best 0.1 -> down to (1,0); right best 0.3 (col 2) vs down 0.4 -> right to (1,2);
        # down to (2,2) = 0.9. (0.2 + 0.1 + 0.3 + 0.9) / 3 = 0.5
        [[0.2, 0.7, 0.6], [0.1, 0.5, 0.3], [0.4, 0.2, 0.9]],
        # tie 0.3 / 0.3 goes right to (0,1); right 0.5 vs down best 0.1 at row 2 -> (2,1); last row: right 0.0.
        # (0 + 0.3 + 0.1 + 0) / 3 = 0.133333 (going down on the tie would give 0.8 / 3 = 0.266667)
        [[0.0, 0.3, 0.5], [0.3, 0.9, 0.9], [0.5, 0.1, 0.0]],
    ])
    assert torch.allclose(greedy_alignment_distance(cost), torch.tensor([0.45, 0.5, 0.4 / 3]), atol=1e-6)


def test_greedy_alignment_matches_gs_loop_on_random_matrices():
    g = torch.Generator().manual_seed(5)
    for s in (2, 3, 6):
        cost = torch.rand(20, s, s, generator=g)
        expected = torch.tensor([_g_shortest_dist1(c.tolist()) for c in cost])
        assert torch.allclose(greedy_alignment_distance(cost), expected, atol=1e-6)
    with pytest.raises(ValueError, match="S >= 2"):
        greedy_alignment_distance(torch.rand(2, 1, 1))


def test_stripe_distance_and_aligned_local_distance_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    b = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    # d = [[sqrt 2, 0], [0, sqrt 2]] (0 -> sqrt(1e-12) = 1e-6); tanh(d / 2) = [[0.608859, 5e-7], [5e-7, 0.608859]]
    m = stripe_distance(a, b)
    assert torch.allclose(m, torch.tensor([[[0.608859, 5e-7], [5e-7, 0.608859]]]), atol=1e-6)
    # path (0,0) -> tie -> right (0,1) -> down (1,1): (0.608859 + 5e-7 + 0.608859) / 2 = 0.608860
    assert aligned_local_distance(a, b).item() == pytest.approx(0.608860, abs=1e-6)


# ----------------------------------------------------------------------------- losses


def test_adp_squared_loss_by_hand_when_every_triplet_is_satisfied():
    # 1-D features 0, 1 (id 0) and 3, 4 (id 1); softmax weights as WRT (alpha = 1):
    # fp = (1e-6 e^(1e-6-1) + 1) / (e^(1e-6-1) + 1 + 1e-6) = 0.731058 for every anchor
    # cn(anchor 0) = (3 + 4 e^-1) / (1 + e^-1 + 1e-6) = 3.268939; cn(anchor 1) = (2 + 3 e^-1) / (...) = 2.268940
    # fp < cn -> y = +1: loss_i = log(1 + exp(-(fp - cn)^2)):
    #   anchor 0: (2.537881)^2 = 6.440840 -> 0.001594; anchor 1: (1.537882)^2 = 2.365080 -> 0.089787
    # by symmetry anchors 3, 2 repeat them: mean = (0.001594 + 0.089787) / 2 = 0.045691
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss, dist = adp_triplet_loss(x, labels)
    assert loss.item() == pytest.approx(0.045691, abs=1e-5)
    assert dist[0, 3].item() == pytest.approx(4.0) and dist[1, 1].item() == pytest.approx(1e-6)
    # square = False: mean log(1 + exp(fp - cn)) = (0.076071 + 0.194604) / 2 = 0.135337 (= WRT)
    assert adp_triplet_loss(x, labels, square=False)[0].item() == pytest.approx(0.135337, abs=1e-5)
    loss.backward()
    assert x.grad[0, 0] < 0 < x.grad[3, 0]  # satisfied triplets still push the identities apart


def test_adp_squared_loss_by_hand_when_triplets_are_violated_and_clamped():
    # features 0, 4 (id 0) and 1, 3 (id 1)
    # anchor 0: fp = 4 / (e^-4 + 1 + 1e-6) = 3.928051, cn = (1 + 3 e^-2) / (1 + e^-2 + 1e-6) = 1.238403
    #   fp > cn -> y = -1: log(1 + exp((2.689648)^2 = 7.234208)) = 7.234930 (anchor 1 the same)
    # anchor 2: fp = 2 / (e^-2 + 1 + 1e-6) = 1.761593, cn = 1.238403 -> log(1 + exp(0.273728)) = 0.839348 (anchor 3 too)
    # mean = (7.234930 + 0.839348) / 2 = 4.037139
    labels = torch.tensor([0, 0, 1, 1])
    assert adp_triplet_loss(torch.tensor([[0.0], [4.0], [1.0], [3.0]]), labels)[0].item() == pytest.approx(4.037139, abs=1e-4)
    # fp ~ 20 or 18, cn ~ 1: (fp - cn)^2 > 300 is clamped at 44 -> log(1 + e^44) = 44, and no gradient
    x = torch.tensor([[0.0], [20.0], [1.0], [19.0]], requires_grad=True)
    loss, _ = adp_triplet_loss(x, labels)
    assert loss.item() == pytest.approx(44.0, abs=1e-4)
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_hard_example_indices_by_hand():
    dist = torch.tensor([[0.0, 2.0, 1.0, 3.0], [2.0, 0.0, 5.0, 1.0], [1.0, 5.0, 0.0, 4.0], [3.0, 1.0, 4.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    pos, neg = hard_example_indices(dist, labels)
    # anchor 0: positives {0: 0, 1: 2} -> 1; negatives {2: 1, 3: 3} -> 2. anchor 1: pos 0, neg 3 (1 < 5)
    # anchor 2: positives {2: 0, 3: 4} -> 3; negatives {0: 1, 1: 5} -> 0. anchor 3: pos 2, neg 1
    assert pos.tolist() == [1, 0, 3, 2] and neg.tolist() == [2, 3, 0, 1]


def test_aligned_local_triplet_by_hand():
    # global 1-D features 0, 1 (id 0), 3, 4 (id 1) -> hardest positive/negative: 0: (1, 2), 1: (0, 2), 2: (3, 1), 3: (2, 1)
    dist = torch.cdist(torch.tensor([[0.0], [1.0], [3.0], [4.0]]), torch.tensor([[0.0], [1.0], [3.0], [4.0]]))
    labels = torch.tensor([0, 0, 1, 1])
    # 2 equal stripes per sample, u = e1, e2, e1, e2: a constant stripe matrix c gives the path
    # (0,0) -> right -> down: 3c / 2 jumps = 1.5 c; c = tanh(sqrt2 / 2) = 0.608859 for e1 vs e2, 5e-7 for equal
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    local = u.unsqueeze(1).expand(4, 2, 2)
    # anchor 0: ap = 1.5 * 0.608859 = 0.913289, an ~ 7.5e-7 -> 0.913289 + 0.3 = 1.213288
    # anchor 1: ap = an = 0.913289 -> 0.3; anchor 2: 0.3; anchor 3: as anchor 0
    # mean = (2 * 1.213288 + 2 * 0.3) / 4 = 0.756644
    assert aligned_local_triplet_loss(local, dist, labels).item() == pytest.approx(0.756644, abs=1e-5)
    assert aligned_local_triplet_loss(local, dist, labels, margin=0.0).item() == pytest.approx(0.456644, abs=1e-5)


def test_glmn_loss_weights_terms_and_expands_loop_labels():
    torch.manual_seed(6)
    feats, local = torch.randn(6, 4), F.normalize(torch.randn(6, 3, 5), dim=2)
    logits = torch.zeros(6, 3)
    logits[[0, 1, 2], [0, 1, 2]] = 5.0  # rows 0-2 predict classes 0, 1, 2
    outputs = {"logits": logits, "feat_pre_bn": feats, "local": local, "row_index": torch.tensor([0, 1, 0, 1, 2, 3])}
    loop_labels, is_ir = torch.tensor([0, 1, 2, 1]), torch.tensor([False, False, True, True])
    full = torch.tensor([0, 1, 0, 1, 2, 1])  # [vis; vis_ca; ir]
    recipe = dataclasses.replace(RECIPE, id_weight=2.0, wrt_weight=3.0)
    got = glmn_loss(outputs, loop_labels, is_ir, recipe)
    assert got["total"].item() == pytest.approx(glmn_loss(outputs, full, is_ir, recipe)["total"].item())
    adp, dist = adp_triplet_loss(feats, full)
    local_term = aligned_local_triplet_loss(local, dist, full)
    assert got["adp"].item() == pytest.approx(adp.item()) and got["local"].item() == pytest.approx(local_term.item())
    assert got["id"].item() == pytest.approx(F.cross_entropy(logits, full).item())
    assert got["total"].item() == pytest.approx(2 * got["id"].item() + 3 * adp.item() + 0.5 * local_term.item(), rel=1e-6)
    assert got["acc"].item() == pytest.approx(2 / 6)  # rows 0 and 1 right (row 2 says 2, its label is 0)
    with pytest.raises(UserError, match="method glmn does not use hc_weight"):  # GLMN has no hetero-centre term: its recipe has no key
        load_config("paper", overrides={"fusion": {"recipes": {"glmn": {"hc_weight": 0.5}}}})


# ----------------------------------------------------------------------------- augmentation


def _channels_equal(x):
    return ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).flatten(1).all(dim=1)


def test_augment_views_shapes_and_visible_first_check():
    aug = GLMNAugment((H, W), pad=2)
    out, partners = aug(torch.rand(6, 3, H, W), torch.tensor([True, True, True, False, False, False]))
    assert partners is None
    assert set(out) == {"vis", "vis_ca", "ir"}
    for t in out.values():
        assert t.shape == (3, 3, H, W) and t.dtype == torch.float32 and t.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="visible rows"):
        aug(torch.rand(4, 3, H, W), torch.tensor([True, False, True, False]))
    with pytest.raises(TypeError):
        aug(torch.zeros(4, 3, H, W, dtype=torch.uint8), torch.tensor([True, True, False, False]))


def test_augment_channel_exchange_on_vis_ca_and_adap_gray_on_ir_statistically():
    torch.manual_seed(7)
    n = 600
    vis_src, ir_plane = torch.rand(n, 3, H, W), torch.rand(n, 1, H, W)
    images = torch.cat([vis_src, ir_plane.expand(n, 3, H, W)])  # infrared: three equal channels
    out, _ = GLMNAugment((H, W), pad=0, flip_p=0.0, erasing_p=0.0)(images, torch.arange(2 * n) < n)
    vis_norm, ir_norm = imagenet_normalize(vis_src), imagenet_normalize(images[n:])
    assert torch.allclose(out["vis"], vis_norm)  # the plain view: no channel operation
    assert not _channels_equal(out["vis"]).any()
    # vis_ca: always one normalised channel of the visible image, R, G, B with 1/3 each (200 +- 12)
    assert _channels_equal(out["vis_ca"]).all()
    chosen = torch.stack([(out["vis_ca"][:, 0] == vis_norm[:, c]).flatten(1).all(1) for c in range(3)], dim=1)
    assert (chosen.sum(dim=1) == 1).all()
    assert all(150 < count < 250 for count in chosen.sum(dim=0).tolist())
    # ir (ChannelAdapGray 0.5): channel c copied with 1/4 each (150 +- 11), gray 1/8 (75 +- 8), unchanged 1/8
    copied = torch.stack([(out["ir"] == ir_norm[:, c : c + 1]).flatten(1).all(1) for c in range(3)], dim=1)
    gray = 0.2989 * ir_norm[:, 0] + 0.5870 * ir_norm[:, 1] + 0.1140 * ir_norm[:, 2]
    is_gray = (out["ir"] - gray.unsqueeze(1)).abs().flatten(1).amax(1) < 1e-6
    unchanged = (out["ir"] == ir_norm).flatten(1).all(1)
    assert ((copied.sum(dim=1) + is_gray.long() + unchanged.long()) == 1).all()
    assert all(110 < count < 190 for count in copied.sum(dim=0).tolist())
    assert 40 < int(is_gray.sum()) < 110 and 40 < int(unchanged.sum()) < 110


def test_channel_adap_gray_probability_only_decides_between_gray_and_unchanged():
    torch.manual_seed(11)
    x = torch.rand(800, 3, 4, 2)
    gray = (x * torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    for p, expected_gray in ((1.0, 200), (0.0, 0)):  # idx 3 has probability 1/4: 800 / 4 = 200 +- 12
        out = adaptive_gray_caj(x, p)
        n_gray = int(torch.isclose(out, gray).flatten(1).all(1).sum())
        n_same = int((out == x).flatten(1).all(1).sum())
        assert abs(n_gray - expected_gray) < 50 and abs(n_same - (200 - expected_gray)) < 50


def _all_crops(src01, pad):
    """Every pad + crop (+ flip) of one (3, H, W) image, normalised: ((2 pad + 1)^2 * 2, 3, H, W)."""
    padded = F.pad(src01, (pad, pad, pad, pad))
    crops = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + H, left : left + W]
            crops += [crop, crop.flip(-1)]
    return imagenet_normalize(torch.stack(crops))


def test_augment_crops_and_flips_each_view_independently():
    torch.manual_seed(8)
    n, pad = 16, 2
    ramp = torch.arange(3 * H * W, dtype=torch.float32).view(3, H, W)
    src = torch.stack([(ramp + 1 + i) / (3 * H * W + n + 1) for i in range(2 * n)])  # unique values, none 0
    out, _ = GLMNAugment((H, W), pad=pad, flip_p=0.5, erasing_p=0.0)(src, torch.arange(2 * n) < n)
    geometry = {"vis": [], "vis_ca": []}
    for i in range(n):
        crops = _all_crops(src[i], pad)  # (50, 3, H, W)
        match_vis = (crops == out["vis"][i]).flatten(1).all(1).nonzero().flatten().tolist()
        # vis_ca: some channel c of some crop, copied to all channels
        match_ca = [(g, c) for c in range(3) for g in (crops[:, c] == out["vis_ca"][i, 0]).flatten(1).all(1).nonzero().flatten().tolist()]
        assert len(match_vis) == 1 and len(match_ca) == 1
        geometry["vis"].append(match_vis[0])
        geometry["vis_ca"].append(match_ca[0][0])
        ir_crops = _all_crops(src[n + i], pad)  # ir: a crop, then copy of a channel, gray or unchanged
        gray = (ir_crops * torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        options = torch.cat([ir_crops, gray.expand_as(ir_crops)] + [ir_crops[:, c : c + 1].expand_as(ir_crops) for c in range(3)])
        assert (options - out["ir"][i]).abs().flatten(1).amax(1).min() < 1e-6
    assert any(a != b for a, b in zip(geometry["vis"], geometry["vis_ca"]))  # two independent draws
    flips = [g % 2 for g in geometry["vis"] + geometry["vis_ca"]]
    assert 0 < sum(flips) < len(flips) and len(set(g // 2 for g in geometry["vis"])) > 3


def test_caj_random_erasing_probability_value_and_rectangle():
    torch.manual_seed(9)
    x = torch.zeros(2000, 3, H, W)
    erased = random_erasing(x, p=0.5)
    mask = erased[:, 0] != 0  # (B, H, W)
    hit = mask.flatten(1).any(1)
    assert 900 < int(hit.sum()) < 1100  # p = 0.5: 1000 +- 22
    for c in range(3):  # fill = CAJ's mean, per channel, inside the rectangle only
        assert torch.allclose(erased[:, c][mask], torch.full_like(erased[:, c][mask], CAJ_ERASE_FILL[c]))
        assert (erased[:, c][~mask] == 0).all()
    m = mask[hit].float()
    rows, cols = m.amax(dim=2).sum(dim=1), m.amax(dim=1).sum(dim=1)
    assert torch.equal(m.sum(dim=(1, 2)), rows * cols)  # one axis-aligned rectangle
    frac = rows * cols / (H * W)
    assert frac.min() >= 0.01 and frac.max() <= 0.45  # area U(0.02, 0.4) of the image, up to rounding
    assert ((rows < H) & (cols < W)).all()
    # corners uniform over 0 .. H - h and 0 .. W - w (both ends): rectangles reach every border
    assert mask[:, 0].any() and mask[:, -1].any() and mask[:, :, 0].any() and mask[:, :, -1].any()
    assert not random_erasing(x[:50], p=0.0).any() and random_erasing(x[:50], p=1.0)[:, 0].ne(0).flatten(1).any(1).all()


def test_augment_erases_each_view_with_probability_half():
    torch.manual_seed(10)
    n = 400
    colour = torch.tensor([0.1, 0.9, 0.3]).view(1, 3, 1, 1).expand(n, 3, H, W)
    heat = torch.full((n, 3, H, W), 0.7)
    out, _ = GLMNAugment((H, W), pad=0, flip_p=0.0, erasing_p=0.5)(torch.cat([colour, heat]), torch.arange(2 * n) < n)
    for name in ("vis", "vis_ca", "ir"):
        varies = (out[name].flatten(2).amax(2) - out[name].flatten(2).amin(2)).amax(1) > 1e-6  # constant unless erased
        assert 160 < int(varies.sum()) < 240, name  # 200 +- 10
    # "vis" is erased before normalisation (G data_loader0.py): its fill is CAJ's mean in [0, 1] units;
    # "vis_ca" after it: the fill is CAJ's numbers themselves, then one channel is copied
    fill = imagenet_normalize(torch.tensor(CAJ_ERASE_FILL).view(1, 3, 1, 1)).view(3, 1)
    background = imagenet_normalize(colour[:1])[0, :, 0, :1]  # (3, 1)
    values = out["vis"].permute(1, 0, 2, 3).flatten(1)  # (3, n H W)
    assert (torch.isclose(values, fill) | torch.isclose(values, background)).all()
    assert torch.isclose(values, fill).any(dim=1).all()
    allowed = torch.cat([background.flatten(), torch.tensor(CAJ_ERASE_FILL)])
    assert torch.isclose(out["vis_ca"].flatten().unsqueeze(1), allowed).any(dim=1).all()
    assert torch.isclose(out["vis_ca"].flatten().unsqueeze(1), torch.tensor(CAJ_ERASE_FILL)).any()


def test_the_registered_glmn_loss_takes_its_weight_and_margin_from_the_recipe():
    from stage2_fusion.methods import METHODS

    torch.manual_seed(0)
    net = GLMNNet(_cfg(), num_classes=3).train()
    labels, is_ir = torch.tensor([0, 1, 0, 1]), torch.tensor([False, False, True, True])
    out = net(_inputs())
    recipe = dataclasses.replace(RECIPE, local_weight=0.25, triplet_margin=5.0)
    got = METHODS["glmn"].loss(out, labels, is_ir, recipe)["total"]
    want = glmn_loss(out, labels, is_ir, recipe, local_weight=0.25, local_margin=5.0)["total"]
    default = glmn_loss(out, labels, is_ir, recipe)["total"]  # weight 0.5, margin 0.3
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert abs(got.item() - default.item()) > 1e-3
