"""MSCMNet: four stems, MIMB, stem averaging at test, QCT loss, the four training views.

Expectations are hand computations (written out in comments) or plain loop transcriptions
of the released code's semantics (Hua-XC/MSCMNet@5b5f874), never the module's own code.
"""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.data.augment import (CAJ_ERASE_FILL, IMAGENET_MEAN, IMAGENET_STD, adaptive_gray_mscmnet, brightness_jitter, channel_exchange,
                                  channel_t, imagenet_normalize, pad_crop_flip, random_erasing, random_grayscale)
from stage2_fusion.methods import load_config
from stage2_fusion.methods.mscmnet import (
    MIMB,
    STREAMS,
    MIMBBlock,
    MSCMNet,
    MSCMNetAugment,
    mimb_heads,
    mscmnet_loss,
    qct_loss,
)

#: The paper profile's mscmnet recipe (id_weight 1, ...), for the loss tests.
RECIPE = load_config("paper").fusion.recipe("mscmnet")

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny convolutions run ~200x faster on one intra-op thread than on two
    contended ones (1.1 s vs 5 ms per forward on the 2-core CI machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- network


def test_forward_shapes_rows_in_stream_order_and_source_rows(tiny_cfg):
    torch.manual_seed(0)
    model = MSCMNet(tiny_cfg, num_classes=5).eval()  # eval: every row depends on its own image only
    x = {s: torch.randn(2 if s.startswith("vis") else 3, 3, 32, 16) for s in STREAMS}
    out = model({k: x[k] for k in ("ir_aug", "vis", "ir", "vis_aug")})  # dict order must not matter
    assert out["feat_pre_bn"].shape == (10, 256) and out["feat_pre_bn"].dtype == torch.float32  # C = 32 * 8
    assert out["feat_post_bn"].shape == (10, 256) and out["logits"].shape == (10, 5)
    # loop batch [vis0, vis1, ir0, ir1, ir2]: vis and vis_aug rows point at the same visible image
    assert out["source_row"].tolist() == [0, 1, 0, 1, 2, 3, 4, 2, 3, 4]
    start = 0
    for s in STREAMS:  # rows follow STREAMS: vis, vis_aug, ir, ir_aug (train.py cat(x1_1, x1_2, x2_1, x2_2))
        single = model({s: x[s]})["feat_post_bn"]
        assert torch.allclose(out["feat_post_bn"][start:start + len(x[s])], single, atol=1e-5), s
        start += len(x[s])
    with pytest.raises(ValueError):
        model({"vis": x["vis"], "thermal": x["ir"]})
    with pytest.raises(ValueError):
        model({"vis": x["vis"], "vis_aug": x["ir"]})  # two views of the same images must align


class _Const(nn.Module):
    """A stand-in stem that outputs a fixed map for every image."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1, -1, -1)


def test_extract_averages_the_two_stem_outputs_of_the_modality(tiny_cfg):
    torch.manual_seed(0)
    model = MSCMNet(tiny_cfg, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 16)
    for modality in ("vis", "ir"):
        for feature in ("pre", "post"):
            f = model.extract({modality: x}, feature=feature)
            assert f.shape == (3, 256) and f.dtype == torch.float32
            assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    vis_before = model.extract({"vis": x})
    stems = model.backbone.stems
    a, b = torch.rand(1, 8, 8, 4), torch.rand(1, 8, 8, 4)  # stem outputs: (w, H/4, W/4) = (8, 8, 4)
    stems["ir"], stems["ir_aug"] = _Const(a), _Const(b)
    got = model.extract({"ir": x})
    stems["ir"], stems["ir_aug"] = _Const((a + b) / 2), _Const((a + b) / 2)
    assert torch.allclose(got, model.extract({"ir": x}), atol=1e-5)  # (stem(x) + stem_aug(x)) / 2
    # ... and not an average of the two single-stem features (the body is not linear)
    stems["ir"], stems["ir_aug"] = _Const(a), _Const(a)
    f_a = model.extract({"ir": x})
    single = model({"ir": x})  # one stem = the average of two equal stems
    assert torch.allclose(f_a, F.normalize(single["feat_post_bn"], dim=1), atol=1e-5)  # "post": l2norm(bottleneck)
    assert torch.allclose(model.extract({"ir": x}, feature="pre"), F.normalize(single["feat_pre_bn"], dim=1), atol=1e-5)
    stems["ir"], stems["ir_aug"] = _Const(b), _Const(b)
    f_b = model.extract({"ir": x})
    assert (got - F.normalize(f_a + f_b, dim=1)).abs().max() > 1e-3
    assert torch.equal(model.extract({"vis": x}), vis_before)  # visible images use the visible stems only
    with pytest.raises(ValueError):
        model.extract({"vis_aug": x})


def test_gradients_reach_all_four_stems_the_mimb_and_the_head(tiny_cfg):
    torch.manual_seed(0)
    model = MSCMNet(tiny_cfg, num_classes=4).train()
    x = {s: torch.randn(4, 3, 32, 16) for s in STREAMS}
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])  # loop batch [vis; ir]
    is_ir = torch.arange(8) >= 4
    mscmnet_loss(model(x), labels, is_ir, RECIPE)["total"].backward()
    params = dict(model.named_parameters())
    names = [f"backbone.stems.{s}.conv1.weight" for s in STREAMS]
    names += [f"mimb.blocks.{i}.{p}" for i in range(4) for p in ("narrow.weight", "broad.weight", "attn.in_proj_weight",
                                                                 "attn.out_proj.weight", "mlp.c_fc.weight", "ln_1.weight")]
    names += [f"mimb.blocks.{i}.{p}" for i in range(3) for p in ("resize.weight", "ln_guide.weight")]
    names += ["backbone.layer1.0.conv1.weight", "backbone.layer4.0.conv3.weight", "bnneck.bn.weight", "bnneck.classifier.weight"]
    for name in names:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    assert model.mimb.blocks[3].resize is None  # the last block is self-attention
    assert model.head_modules() == [model.bnneck]  # build_optimizer.py: bottleneck + classifier at lr


def test_nonlocal_width_is_half_the_channels_whatever_the_config_says(tiny_cfg):
    assert tiny_cfg.fusion.backbone.nonlocal_inter_channels == 1  # AGW's value in the profile
    model = MSCMNet(tiny_cfg, num_classes=3)
    assert model.backbone.nonlocal_layer2[0].inter_channels == 32  # layer2: 8w = 64 channels -> 32
    assert model.backbone.nonlocal_layer3[0].inter_channels == 64  # layer3: 16w = 128 -> 64


def test_mimb_guides_are_stem_layer1_layer2_and_its_output_alone_feeds_layer4(tiny_cfg):
    torch.manual_seed(0)
    model = MSCMNet(tiny_cfg, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 16)
    seen = {}
    for i, block in enumerate(model.mimb.blocks):
        block.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args))
    model({"vis": x})
    bb = model.backbone
    x0 = bb.stems["vis"](x)
    x1 = bb._run_stage(1, x0)
    x2 = bb._run_stage(2, x1)
    x3 = bb._run_stage(3, x2)
    assert torch.allclose(seen[0][0], x3, atol=1e-6) and torch.allclose(seen[0][1], x0, atol=1e-6)
    assert torch.allclose(seen[1][1], x1, atol=1e-6) and torch.allclose(seen[2][1], x2, atol=1e-6)
    assert seen[3][1] is None
    assert torch.allclose(seen[1][0], model.mimb.blocks[0](x3, x0), atol=1e-5)  # blocks are chained
    # No skip around the MIMB: silence the last block and layer4 sees a constant map.
    with torch.no_grad():
        model.mimb.blocks[3].broad.weight.zero_()
        model.mimb.blocks[3].broad.bias.zero_()
    f = model({"vis": torch.randn(2, 3, 32, 16)})["feat_pre_bn"]
    assert torch.allclose(f[0], f[1], atol=1e-6)


def _selector_block(guided: bool) -> MIMBBlock:
    """C = 8 channels -> 2 channel tokens of width 2 (a 2 x 1 map), one head; narrow takes
    channels 0 and 1, broad writes them back (other channels 0); MHA projections are
    identities without bias; the MLP is off (c_proj = 0)."""
    block = MIMBBlock(8, token_dim=2, num_heads=1, guide_channels=2 if guided else None, guide_stride=2)
    with torch.no_grad():
        for conv in (block.narrow, block.broad):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0] = 1.0
            conv.weight[1, 1] = 1.0
        block.attn.in_proj_weight.copy_(torch.cat([torch.eye(2)] * 3))
        block.attn.in_proj_bias.zero_()
        block.attn.out_proj.weight.copy_(torch.eye(2))
        block.attn.out_proj.bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
    if guided:
        block.resize = nn.Identity()  # hand the guide tokens in directly
    return block


def _attend(q: list[list[float]], values: list[list[float]]) -> list[list[float]]:
    """One head of width 2: softmax_j(q_i . q_j / sqrt(2)) weighted sum of values_j."""
    out = []
    for i in range(2):
        scores = [sum(q[i][d] * q[j][d] for d in range(2)) / math.sqrt(2) for j in range(2)]
        e = [math.exp(s) for s in scores]
        out.append([sum(e[j] / sum(e) * values[j][d] for j in range(2)) for d in range(2)])
    return out


def test_guided_mimb_block_by_hand_query_key_from_guide_value_from_deep_map():
    block = _selector_block(guided=True)
    with torch.no_grad():
        block.ln_guide.bias.copy_(torch.tensor([0.5, 0.0]))  # makes the guide tokens asymmetric
    x = torch.full((1, 8, 2, 1), 5.0)
    x[0, 0, :, 0] = torch.tensor([3.0, 1.0])  # token 0
    x[0, 1, :, 0] = torch.tensor([0.0, 2.0])  # token 1
    guide = torch.tensor([[4.0, 0.0], [1.0, 3.0]]).view(1, 2, 2, 1)
    # LayerNorm of [a, b] = +-(a - b) / 2 / sqrt(((a - b) / 2)^2 + 1e-5):
    k1, k2 = 1 / math.sqrt(1 + 1e-5), 2 / math.sqrt(4 + 1e-5)  # ~0.999995, ~0.9999988
    t = [[k1, -k1], [-k1, k1]]  # LN_1 of [3, 1], [0, 2]
    g = [[k2 + 0.5, -k2], [-k1 + 0.5, k1]]  # LN_g of [4, 0], [1, 3], + bias [0.5, 0]: ~[1.5, -1], [-0.5, 1]
    v = [[t[i][d] + 0.1 * g[i][d] for d in range(2)] for i in range(2)]  # t + 0.1 g: ~[1.15, -1.10], [-1.05, 1.10]
    # scores g_i.g_j / sqrt 2 = [3.25, -1.75; -1.75, 1.25] / 1.414 -> rows [0.9717, 0.0283], [0.1070, 0.8930]
    a = _attend(g, v)
    expected = [[v[i][d] + a[i][d] for d in range(2)] for i in range(2)]  # ~[2.2377, -2.1377], [-1.8645, 1.9645]
    out = block(x, guide)
    assert out.shape == (1, 8, 2, 1)
    assert torch.allclose(out[0, :2, :, 0], torch.tensor(expected), atol=1e-4)
    assert torch.equal(out[0, 2:], torch.zeros(6, 2, 1))
    # query/key from the deep map and value from the guide gives ~[2.5914, -2.0414], ...: not what the code does
    swapped = [[v[i][d] + b for d, b in enumerate(row)] for i, row in enumerate(_attend(v, g))]
    assert not torch.allclose(out[0, :2, :, 0], torch.tensor(swapped), atol=1e-2)
    with pytest.raises(ValueError):
        block(x)  # a guided block needs its guide


def test_self_attention_mimb_block_by_hand_with_the_mlp():
    block = _selector_block(guided=False)
    with torch.no_grad():  # MLP = QuickGELU on the two token dimensions
        block.mlp.c_fc.weight.zero_()
        block.mlp.c_fc.bias.zero_()
        block.mlp.c_fc.weight[:2].copy_(torch.eye(2))
        block.mlp.c_proj.weight[:, :2].copy_(torch.eye(2))
    x = torch.zeros(1, 8, 2, 1)
    x[0, 0, :, 0] = torch.tensor([3.0, 1.0])
    x[0, 1, :, 0] = torch.tensor([0.0, 2.0])
    k1 = 1 / math.sqrt(1 + 1e-5)
    t = [[k1, -k1], [-k1, k1]]  # LN_1 tokens
    # scores +-2/sqrt 2 -> weights [0.9442, 0.0558]: u0 = t0 + 0.8884 t0 = ~[1.8884, -1.8884]
    a = _attend(t, t)
    u = [[t[i][d] + a[i][d] for d in range(2)] for i in range(2)]

    def layer_norm(z: list[float]) -> list[float]:
        m = sum(z) / 2
        var = sum((q - m) ** 2 for q in z) / 2
        return [(q - m) / math.sqrt(var + 1e-5) for q in z]

    def quick_gelu(z: float) -> float:
        return z / (1 + math.exp(-1.702 * z))

    # u + QuickGELU(LN_2(u)): LN_2(u0) = ~[1, -1] -> [0.8458, -0.1542] -> ~[2.7342, -2.0426]
    expected = [[u[i][d] + quick_gelu(layer_norm(u[i])[d]) for d in range(2)] for i in range(2)]
    out = block(x)
    assert torch.allclose(out[0, :2, :, 0], torch.tensor(expected), atol=1e-4)
    with pytest.raises(ValueError):
        block(x, x[:, :2])  # the self-attention block takes no guide
    with pytest.raises(ValueError):
        block(torch.zeros(1, 8, 2, 2))  # built for 2-wide tokens


def test_mimb_at_384x192_has_256_tokens_of_width_288_in_32_heads_and_resizes_guides():
    mimb = MIMB(64, (24, 12))  # layer3 of ResNet-50 at 384 x 192: 1024 x 24 x 12
    for block in mimb.blocks:
        assert block.narrow.in_channels == 1024 and block.narrow.out_channels == 256  # 256 channel tokens
        assert block.attn.embed_dim == 288 and block.attn.num_heads == 32  # model.py edim=288, redic=9
    r0, r1, r2 = (mimb.blocks[i].resize for i in range(3))
    assert (r0.in_channels, r1.in_channels, r2.in_channels) == (64, 256, 512)  # stem, layer1, layer2 outputs
    for r in (r0, r1):  # ATT_narrow1
        assert (r.kernel_size, r.stride, r.padding) == ((6, 6), (4, 4), (2, 2))
    assert (r2.kernel_size, r2.stride, r2.padding) == ((4, 4), (2, 2), (1, 1))  # ATT_narrow2
    assert r0(torch.zeros(1, 64, 96, 48)).shape == (1, 256, 24, 12)
    assert r2(torch.zeros(1, 512, 48, 24)).shape == (1, 256, 24, 12)


def test_mimb_heads_keep_width_9_or_fall_back_to_a_divisor():
    assert mimb_heads(288) == 32  # 384 x 192: 24 * 12
    assert mimb_heads(162) == 18  # 288 x 144: 18 * 9, heads of width 9
    assert mimb_heads(2) == 1  # 32 x 16: 2 * 1
    assert mimb_heads(200) == 20  # 200 // 9 = 22 does not divide 200; 20 does
    assert mimb_heads(7) == 1
    with pytest.raises(ValueError):
        mimb_heads(0)


# --------------------------------------------------------------------------- loss

# 1-D features of the 4 views (rows vis, vis_aug, ir, ir_aug), identities [0, 1] in each view:
#   vis 0, 10 | vis_aug 1, 14 | ir 4, 9 | ir_aug 2, 13
_FEATS = torch.tensor([0.0, 10.0, 1.0, 14.0, 4.0, 9.0, 2.0, 13.0]).view(8, 1)
_LABELS4 = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
_IS_IR4 = torch.tensor([False] * 4 + [True] * 4)
# Centres: id0 vis {0, 1} -> 0.5, ir {4, 2} -> 3, all 1.75; id1 vis {10, 14} -> 12, ir {9, 13} -> 11, all 11.5.
# Pull (to the other modality's centre): |0-3| |10-11| |1-3| |14-11| |4-0.5| |9-12| |2-0.5| |13-12|
#   = 3, 1, 2, 3, 3.5, 3, 1.5, 1 -> mean 18 / 8 = 2.25.
# Push, distance to the other identity's all-view centre: 11.5, 8.25, 10.5, 12.25, 7.5, 7.25, 9.5, 11.25;
#   margin 0.7: all hinges 0 -> QCT = (2.25 + 0) / 2 = 1.125;
#   margin 10: hinges 0, 1.75, 0, 0, 2.5, 2.75, 0.5, 0 -> mean 0.9375 -> QCT = (2.25 + 0.9375) / 2 = 1.59375.


def test_qct_by_hand_on_two_identities():
    assert qct_loss(_FEATS, _LABELS4, _IS_IR4, margin=0.7).item() == pytest.approx(1.125, abs=1e-5)
    assert qct_loss(_FEATS, _LABELS4, _IS_IR4, margin=10.0).item() == pytest.approx(1.59375, abs=1e-5)


def test_qct_weights_negative_centres_by_their_rows():
    # 3 identities, every view of an identity at one value: id0 = 0 (1 image per view),
    # id1 = 5 (2 images per view), id2 = 20 (1 per view): 4 + 8 + 4 rows, pull ~0 (clamped sqrt 1e-6).
    labels_view = torch.tensor([0, 1, 1, 2])
    labels = labels_view.repeat(4)
    feats = torch.tensor([0.0, 5.0, 5.0, 20.0]).repeat(4).view(16, 1)
    is_ir = torch.arange(16) >= 8
    # margin 10: id0 rows: d(c1) = 5 -> 5 over 8 rows, d(c2) = 20 -> 0 over 4 rows: (8 * 5) / 12 = 10/3
    # id1 rows: d(c0) = 5 -> 5 (4 rows), d(c2) = 15 -> 0 (4 rows): 2.5;  id2 rows: 0.
    # push = (4 * 10/3 + 8 * 2.5 + 0) / 16 = 2.0833; a plain mean over distinct centres would give 1.875
    assert qct_loss(feats, labels, is_ir, margin=10.0).item() == pytest.approx((1e-6 + 2.0833333) / 2, abs=1e-5)


def _qct_as_released(inputs: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """loss.py QuarCenterTripletLoss.forward, loop by loop, on rows [RGB1; RGB2; IR1; IR2]:
    row i of the visible half is pulled to the centre of the infrared rows whose label is
    that of infrared row i (and the reverse); push over every row's all-view centre."""
    n = inputs.shape[0]
    half = n // 2
    rgb, ir, ir_labels = inputs[:half], inputs[half:], targets[half:]
    cross = [ir[ir_labels == ir_labels[i]].mean(0) for i in range(half)]
    cross += [rgb[ir_labels == ir_labels[i]].mean(0) for i in range(half)]
    pull = (inputs - torch.stack(cross)).pow(2).sum(1).sqrt().mean()
    centres = torch.stack([inputs[targets == targets[i]].mean(0) for i in range(n)])
    dist = torch.cdist(inputs, centres)
    hinge = [(margin - dist[i][targets != targets[i]]).clamp(min=0).mean() for i in range(n)]
    return (pull + torch.stack(hinge).mean()) / 2


def test_qct_matches_the_released_loops_on_a_sampler_batch():
    torch.manual_seed(0)
    per_view = torch.tensor([0, 0, 1, 1, 2, 2])  # IdentitySampler: same ids, same order in both modalities
    labels = per_view.repeat(4)  # cat(label1, label1, label2, label2)
    is_ir = torch.arange(24) >= 12
    feats = torch.randn(24, 5)
    for margin in (0.7, 3.0):  # distances ~3: margin 3 activates part of the hinges
        assert qct_loss(feats, labels, is_ir, margin).item() == pytest.approx(_qct_as_released(feats, labels, margin).item(), abs=1e-5)


def test_total_loss_by_hand():
    # Loop batch [vis0, vis1, ir0, ir1] with labels [0, 1, 0, 1] -> view labels [0,1,0,1,0,1,0,1].
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    outputs = {"feat_pre_bn": _FEATS, "logits": logits, "source_row": torch.tensor([0, 1, 0, 1, 2, 3, 2, 3])}
    labels, is_ir = torch.tensor([0, 1, 0, 1]), torch.tensor([False, False, True, True])
    # CE: 6 rows log(1 + e^-2) = 0.126928, 2 rows log 2 = 0.693147 -> (0.761568 + 1.386294) / 8 = 0.268483
    # accuracy: argmax of [0, 0] is class 0, right for row 4, wrong for row 5 -> 7 / 8
    out = mscmnet_loss(outputs, labels, is_ir, RECIPE)
    assert set(out) == {"id", "qct", "total", "acc"}
    assert out["id"].item() == pytest.approx(0.268483, abs=1e-5)
    assert out["qct"].item() == pytest.approx(1.125, abs=1e-5)
    assert out["total"].item() == pytest.approx(0.268483 + 1.125, abs=1e-5)
    assert out["acc"].item() == pytest.approx(0.875)
    # id_weight 2, qct_weight 0.5, margin 10: 2 * 0.268483 + 0.5 * 1.59375 = 1.333841
    weighted = mscmnet_loss(outputs, labels, is_ir, dataclasses.replace(RECIPE, id_weight=2.0), margin=10.0, qct_weight=0.5)
    assert weighted["total"].item() == pytest.approx(1.333841, abs=1e-5)


def test_view_labels_are_vis_vis_ir_ir_from_the_loop_labels(tiny_cfg):
    model = MSCMNet(tiny_cfg, num_classes=4).eval()
    out = model({s: torch.randn(2, 3, 32, 16) for s in STREAMS})
    labels = torch.tensor([3, 1, 0, 2])  # [vis; ir]
    view_labels = [3, 1, 3, 1, 0, 2, 0, 2]  # cat(label1, label1, label2, label2)
    out["logits"] = 10.0 * F.one_hot(torch.tensor(view_labels), 4).float()
    losses = mscmnet_loss(out, labels, torch.tensor([False, False, True, True]), RECIPE)
    assert losses["acc"].item() == 1.0
    assert losses["id"].item() == pytest.approx(math.log(1 + 3 * math.exp(-10)), abs=1e-6)
    with pytest.raises(ValueError):
        mscmnet_loss({k: v for k, v in out.items() if k != "source_row"}, labels, labels < 0, RECIPE)
    with pytest.raises(ValueError):
        mscmnet_loss(out, labels, torch.tensor([False, True]), RECIPE)


# --------------------------------------------------------------------------- augmentation


def test_augment_gives_four_normalised_views_of_the_right_rows():
    torch.manual_seed(0)
    images = torch.rand(5, 3, 32, 16)
    is_visible = torch.tensor([False, True, False, True, False])  # rows need not be sorted
    views, _ = MSCMNetAugment()(images, is_visible)
    assert set(views) == set(STREAMS)
    assert views["vis"].shape == views["vis_aug"].shape == (2, 3, 32, 16)
    assert views["ir"].shape == views["ir_aug"].shape == (3, 3, 32, 16)
    assert views["vis"].is_contiguous(memory_format=torch.channels_last)
    for a, b in (("vis", "vis_aug"), ("ir", "ir_aug")):  # the two views of an image differ
        assert ((views[a] - views[b]).abs().amax(dim=(1, 2, 3)) > 0.1).all()
    # With its random steps off, "vis" and "ir_aug" are the normalised images of their rows.
    plain, _ = MSCMNetAugment(pad=0, flip_p=0.0, gray_p=0.0, erasing_p=0.0, brightness=0.0, channel_t_p=0.0)(images, is_visible)
    assert torch.allclose(plain["vis"], (images[[1, 3]] - MEAN) / STD, atol=1e-6)
    assert torch.allclose(plain["ir_aug"], (images[[0, 2, 4]] - MEAN) / STD, atol=1e-6)
    with pytest.raises(TypeError):
        MSCMNetAugment()((images * 255).to(torch.uint8), is_visible)
    with pytest.raises(ValueError):
        MSCMNetAugment()(images, is_visible[:4])


def test_augment_erases_in_the_normalised_tensor_with_the_code_values():
    torch.manual_seed(0)
    views, _ = MSCMNetAugment()(torch.rand(40, 3, 32, 16), torch.ones(40, dtype=torch.bool))
    fill = torch.tensor(CAJ_ERASE_FILL).view(1, 3, 1, 1)
    erased = (views["vis"] == fill).all(dim=1)  # (B, H, W): pixels holding (0.4914, 0.4822, 0.4465)
    assert 0.3 < erased.flatten(1).any(dim=1).float().mean() < 0.7  # ChannelRandomErasing(probability=0.5)


def _constant_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n visible images of one random colour each, then n infrared images of one random
    brightness in three equal channels; 2 x 2 pixels (crop and flip leave them unchanged)."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, 1, 1, generator=g)
    v = torch.rand(n, 1, 1, 1, generator=g).expand(-1, 3, -1, -1)
    images = torch.cat([rgb, v]).expand(-1, -1, 2, 2).contiguous()
    return images, rgb, v


def test_each_view_gets_the_transform_the_code_gives_it():
    torch.manual_seed(1)
    n = 400
    images, rgb, v = _constant_batch(n, seed=0)
    is_visible = torch.arange(2 * n) < n
    views, _ = MSCMNetAugment(pad=0, erasing_p=0.0)(images, is_visible)
    px = {k: t[:, :, :1, :1] for k, t in views.items()}  # every pixel is the same

    def norm(z: torch.Tensor) -> torch.Tensor:
        return (z - MEAN) / STD

    def close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per row
        return (a - b).abs().amax(dim=(1, 2, 3)) < 1e-5

    # "vis": RandomGrayscale(0.5) before normalisation, luma 0.299 R + 0.587 G + 0.114 B
    luma = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]).expand(-1, 3, -1, -1)
    is_gray, is_plain = close(px["vis"], norm(luma)), close(px["vis"], norm(rgb))
    assert (is_gray | is_plain).all() and 0.4 < is_gray.float().mean() < 0.6
    # "vis_aug": ChannelExchange(gray=2) after normalisation: one of R', G', B' in all channels
    picks = torch.stack([close(px["vis_aug"], norm(rgb)[:, c:c + 1].expand(-1, 3, -1, -1)) for c in range(3)])
    assert picks.any(dim=0).all()
    assert all(0.25 < f < 0.42 for f in picks.float().mean(dim=1).tolist())
    # "ir": ChannelAdapGray(0.5) after normalisation: G' copy (1/2), luma of the normalised channels (1/4), unchanged (1/4)
    nv = norm(v)
    g_copy = close(px["ir"], nv[:, 1:2].expand(-1, 3, -1, -1))
    gray = close(px["ir"], (0.2989 * nv[:, 0:1] + 0.587 * nv[:, 1:2] + 0.114 * nv[:, 2:3]).expand(-1, 3, -1, -1))
    same = close(px["ir"], nv)
    assert (g_copy | gray | same).all()
    assert 0.43 < g_copy.float().mean() < 0.57 and 0.18 < gray.float().mean() < 0.32 and 0.18 < same.float().mean() < 0.32
    # "ir_aug": brightness x U(0.5, 1.5) then ChannelT(0.5): half the images keep equal raw channels
    raw = px["ir_aug"] * STD + MEAN
    equal = (raw.amax(dim=1) - raw.amin(dim=1)).flatten() < 1e-5
    assert 0.4 < equal.float().mean() < 0.6
    factor = (raw[equal, 0] / v[equal, 0]).flatten()
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4
    assert factor.min() < 0.6 and factor.max() > 1.4


def test_channel_adap_gray_changes_normalised_infrared_images_but_not_raw_ones():
    v = torch.rand(300, 1, 4, 2).expand(-1, 3, -1, -1).contiguous()  # infrared: three equal channels
    torch.manual_seed(0)
    # Before normalisation (what MSCMNet issue #4 observes) every outcome is the image itself
    # (the luma weights sum to 0.9999).
    assert torch.allclose(adaptive_gray_mscmnet(v), v, atol=2e-4)
    # The code applies it after normalisation, where the channels differ: 3/4 of the images change.
    normalised = imagenet_normalize(v)
    torch.manual_seed(0)
    changed = (adaptive_gray_mscmnet(normalised) - normalised).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0.65 < changed.float().mean() < 0.85


def test_pad_crop_flip_takes_a_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    img = torch.arange(1.0, 13.0).view(1, 1, 4, 3) + torch.tensor([0.0, 100.0, 200.0]).view(1, 3, 1, 1)  # (1, 3, 4, 3)
    out = pad_crop_flip(img.expand(300, -1, -1, -1), pad=2, flip_p=0.5)
    padded = F.pad(img, (2, 2, 2, 2))[0]  # (3, 8, 7), zeros around values 1..212
    seen = set()
    for b in range(out.shape[0]):
        found = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                 if torch.equal(out[b], padded[:, dy:dy + 4, dx:dx + 3].flip(-1) if flip else padded[:, dy:dy + 4, dx:dx + 3])]
        assert len(found) == 1, b  # the same window for all three channels
        seen.add(found[0])
    assert {(dy, dx) for dy, dx, _ in seen} == {(dy, dx) for dy in range(5) for dx in range(5)}  # offsets 0..2 * pad
    assert {flip for *_, flip in seen} == {False, True}


def test_channel_random_erasing_fills_one_rectangle_with_the_code_values():
    torch.manual_seed(0)
    x = torch.full((300, 3, 32, 16), -7.0)
    out = random_erasing(x, p=0.5)
    erased = out[:, 0] != -7.0  # (B, H, W)
    hit = erased.flatten(1).any(dim=1)
    assert 0.4 < hit.float().mean() < 0.6
    areas = []
    for b in hit.nonzero().flatten().tolist():
        rows, cols = erased[b].any(dim=1).nonzero().flatten(), erased[b].any(dim=0).nonzero().flatten()
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert erased[b].sum() == h * w and h < 32 and w < 16  # one full rectangle, smaller than the image
        for c in range(3):
            assert (out[b, c][erased[b]] == CAJ_ERASE_FILL[c]).all()
        areas.append(int(h * w))
    # target area U(0.02, 0.4) x 512 = [10.2, 204.8] (mean 107.5), up to rounding of h and w;
    # kornia's default (0.02, 0.33) would give a mean of ~90 and nothing above ~180
    assert min(areas) >= 4 and max(areas) <= 230 and min(areas) < 30 and max(areas) > 190
    assert 100 < sum(areas) / len(areas) < 120


def test_channel_exchange_copies_one_channel_to_all_three():
    torch.manual_seed(0)
    x = torch.randn(300, 3, 2, 2)
    out = channel_exchange(x)
    picks = torch.stack([(out == x[:, c:c + 1]).all(dim=(1, 2, 3)) for c in range(3)])  # (3, B)
    assert picks.any(dim=0).all()
    assert all(0.25 < f < 0.42 for f in picks.float().mean(dim=1).tolist())  # R, G, B equally likely


def test_channel_t_scales_each_channel_by_2a_with_a_in_0_01_to_0_5():
    torch.manual_seed(0)
    ones = torch.ones(400, 3, 1, 1)
    scale = channel_t(ones, p=1.0).flatten(1)
    assert scale.min() >= 0.02 - 1e-6 and scale.max() <= 1.0 + 1e-6
    assert scale.min() < 0.05 and scale.max() > 0.95
    assert (scale[:, 0] != scale[:, 1]).all()  # independent per channel
    unchanged = (channel_t(ones, p=0.5) == 1.0).all(dim=1).flatten()
    assert 0.4 < unchanged.float().mean() < 0.6


def test_brightness_and_grayscale_by_hand():
    torch.manual_seed(0)
    half = torch.full((400, 3, 1, 1), 0.5)
    out = brightness_jitter(half, 0.5)  # factor U(0.5, 1.5) per image
    assert out.min() >= 0.25 - 1e-6 and out.max() <= 0.75 + 1e-6 and out.min() < 0.27 and out.max() > 0.73
    assert (out == out[:, :1]).all()  # one factor for all channels
    assert brightness_jitter(torch.full((50, 3, 1, 1), 0.9), 0.5).max() == 1.0  # clipped at 1
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(4, -1, -1, -1)
    assert torch.allclose(random_grayscale(red, 1.0), torch.full((4, 3, 1, 1), 0.299))  # PIL "L" weights
    assert torch.equal(random_grayscale(red, 0.0), red)


def test_the_registered_mscmnet_loss_takes_its_margin_and_weight_from_the_recipe(tiny_cfg):
    from stage2_fusion.methods import METHODS

    torch.manual_seed(0)
    model = MSCMNet(tiny_cfg, num_classes=4).train()
    x = {s: torch.randn(4, 3, 32, 16) for s in STREAMS}
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    is_ir = torch.arange(8) >= 4
    out = model(x)
    recipe = dataclasses.replace(RECIPE, triplet_margin=10.0, qct_weight=0.5)
    got = METHODS["mscmnet"].loss(out, labels, is_ir, recipe)["total"]
    want = mscmnet_loss(out, labels, is_ir, recipe, margin=10.0, qct_weight=0.5)["total"]
    default = mscmnet_loss(out, labels, is_ir, recipe)["total"]  # margin 0.7, weight 1
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert abs(got.item() - default.item()) > 1e-3
