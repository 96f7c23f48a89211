"""MSCMNet (Hua et al., Pattern Recognition 2024): four stems, MIMB after layer3, ID + QCT.

Paper: X. Hua, K. Cheng, H. Lu, J. Tu, Y. Wang, S. Wang, "MSCMNet: Multi-scale Semantic
Correlation Mining for Visible-Infrared Person Re-Identification", Pattern Recognition 2024,
111090 (arXiv 2311.14395). Its three parts, by the paper's names: the quadruple-stream
feature extractor (QFE), the multi-scale information correlation mining block (MIMB) and
the quadruple centre triplet loss (QCT). We had the paper's abstract only, not its body, so
equation numbers are not cited; every detail below is taken from the released code,
Hua-XC/MSCMNet at commit 5b5f874 (paths relative to that repository):

* **QFE** (model.py ``embed_net``, ``visible_module(A)``, ``thermal_module(A)``): four
  ImageNet ResNet-50 stems (conv1, bn1, relu, maxpool): visible, visible-augmented,
  infrared, infrared-augmented; then AGW's shared layer1-4 with non-local blocks
  (``non_layers = [0, 2, 3, 0]``, last stride 1). MSCMNet's ``Non_local`` sets
  ``inter_channels = in_channels // reduc_ratio`` with ``reduc_ratio = 2`` (AGW's
  ``reduc_ratio // reduc_ratio`` = 1 is commented out), so the non-local width here is
  always C / 2, whatever ``cfg.fusion.backbone.nonlocal_inter_channels`` says.
* **MIMB** (model.py ``layerATT``, four instances ``layerATT0..3`` applied in
  ``embed_net.forward`` after layer3 (1024 x 24 x 12 at 384 x 192): see
  :class:`MIMBBlock`. The MIMB output *replaces* the layer3 map as layer4's input (no skip
  connection around the four blocks).
* **Head** (model.py): GeM (p = 3) on the fp32 layer4 map -> BNNeck (BatchNorm1d with a
  frozen zero bias, bias-free classifier). Training returns (GeM feature, logits) for the
  4 views; test returns the L2-normalised GeM ("pool") and BN ("fc") features.
* **Test** (test.py ``extract_*_feat``, model.py ``modal`` 1/2): the same image goes
  through both stems of its modality and the two *stem outputs* are averaged,
  ``x = (stem(x) + stem_aug(x)) / 2``, before the shared body; no flip.
* **Loss** (train.py): ``CrossEntropyLoss(logits, labels) + QuarCenterTripletLoss(k_size=4,
  margin=0.7)(gem_feature, labels)``, labels ``cat(label1, label1, label2, label2)``,
  under fp16 ``torch.cuda.amp.autocast`` with a ``GradScaler``: see :func:`qct_loss`.
* **Augmentation** (build_transforms.py, channel_aug.py, data_loader.py): every visible
  image gives two views (``train_transforms_color1/2``), every infrared image two
  (``train_transforms_thermal1/2``): see :class:`MSCMNetAugment`.

What the training loop does (stage2_fusion/train.py): augment with :class:`MSCMNetAugment`
(not ``ReidTrainAugment``) and call ``model(augment(x01, is_visible))``; pass the loop's
usual ``[labels_vis; labels_ir]`` and ``is_ir`` to :func:`mscmnet_loss`, which expands
them to the four views itself (via ``outputs["source_row"]``). The recipe is
``[fusion.recipes.mscmnet]`` of the paper profile.

Precision: the code trains under fp16 autocast with a GradScaler (train.py
``amp.autocast(enabled=True)``, ``amp.GradScaler()``) and tests in float32 (test.py has no
autocast). Our loop autocasts to ``fusion.amp_dtype``: "bf16" by default in both profiles
(no scaler; fp16 + GradScaler on GPUs without bf16), "fp16" for the code's own fp16 +
GradScaler; evaluation runs in float32 unless ``eval.amp`` asks otherwise. On the CPU
everything is float32. benchmarks/fidelity.py compares this module with the code in float32.

The published training log does not match the released recipe: the code drops the
learning rate at epochs 25, 90 and 120 over 150 epochs (build_lrscheduler.py, train.py),
while result/log/sysu_log/sysu_mscm_p4_n6_lr_0.1_seed_0_os.txt drops it at epoch 80, not
90, and stops at epoch 114 (its best epoch is 95). We follow the released code; the README's
figures may come from the logged run. They are those of the checkpoint with the best
Rank-1 of its per-epoch test on one gallery draw (trial 0): train.py saves ``*_best.t`` and
test.py loads ``sysu_mscm_p4_n6_lr_0.1_seed_0_best.t`` by default. We report the last epoch
(``reid.pt``) and, labelled optimistic, ``best.pt`` (chosen the same way).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from common.data.augment import (adaptive_gray_mscmnet, brightness_jitter, channel_exchange, channel_t, imagenet_normalize, pad_crop_flip,
                                  random_erasing, random_grayscale)
from dataclasses import dataclass

from common.config import Recipe, at_least
from common.nets.resnet import stage_channels
from stage2_fusion.backbone import AGWBackbone
from stage2_fusion.layers import BNNeck, GeM
from stage2_fusion.losses import identity_loss
from stage2_fusion.method_spec import MethodSpec

STREAMS = ("vis", "vis_aug", "ir", "ir_aug")
"""The four QFE stems, in the code's batch order ``cat(x1_1, x1_2, x2_1, x2_2)``."""

TEST_STEMS = {"vis": ("vis", "vis_aug"), "ir": ("ir", "ir_aug")}
"""The two stems whose outputs are averaged at test time, per modality (model.py ``modal``)."""

_INFRARED_STREAMS = ("ir", "ir_aug")

# --------------------------------------------------------------------------- recipe

# The training recipe, with the source of every value, is [fusion.recipes.mscmnet] in
# common/profiles/paper.toml.


# --------------------------------------------------------------------------- MIMB


def mimb_heads(token_dim: int, head_dim: int = 9) -> int:
    """Number of attention heads for MIMB tokens of width ``token_dim``.

    The code builds ``nn.MultiheadAttention(embed_dim=288, num_heads=288 // 9)``
    (model.py ``layerATT(edim=288, redic=9)``): heads of width 9, 32 of them at 384 x 192.
    We keep width 9 whenever ``token_dim`` is a multiple of 9 (162 at 288 x 144 -> 18 heads);
    otherwise (the code would fail) we take the largest divisor of ``token_dim`` not above
    ``max(1, token_dim // 9)`` (2 at 32 x 16 -> 1 head).

    Raises:
        ValueError: ``token_dim`` or ``head_dim`` below 1.
    """
    if token_dim < 1 or head_dim < 1:
        raise ValueError(f"token_dim and head_dim must be >= 1, got {token_dim}, {head_dim}")
    if token_dim % head_dim == 0:
        return token_dim // head_dim
    limit = max(1, token_dim // head_dim)
    return max(d for d in range(1, limit + 1) if token_dim % d == 0)


class _LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input's dtype (model.py ``LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x) (model.py ``QuickGLUE``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_GUIDE_RESIZE = {4: (6, 4, 2), 2: (4, 2, 1)}  # guide stride -> (kernel, stride, padding)


class MIMBBlock(nn.Module):
    """One MIMB block: multi-head attention between *channel tokens* (model.py ``layerATT``).

    Tokens are channels: a 1x1 conv ("narrow", ``ATT_narrow``) takes the C-channel map to
    C/4 channels, each flattened to a token of width h*w (256 tokens of width 24*12 = 288
    for C = 1024 at 384 x 192). With a guide map g (a shallower stage) resized to
    (C/4, h, w) by a strided conv ("resize", ``ATT_narrow1`` kernel 6 / stride 4 / padding 2
    for H/4 maps, ``ATT_narrow2`` kernel 4 / stride 2 / padding 1 for H/8 maps):

        t = LN_1(narrow(x));  u = LN_g(resize(g))           (B, C/4, h*w)
        t = t + 0.1 u
        t = t + MHA(query = u, key = u, value = t)          channel-to-channel attention
        t = t + MLP(LN_2(t))                                MLP: d -> 4d -> d, QuickGELU
        out = broad(t as (B, C/4, h, w))                    1x1 conv back to C ("ATT_broad")

    Without a guide (the last block, ``layer == 3``) it is self-attention:
    ``t = LN_1(narrow(x)); t = t + MHA(t, t, t); t = t + MLP(LN_2(t))``. There is no
    residual from x to the output. Layer norms run over the token width, in float32. The
    MHA has the default in/out projections with biases and no dropout; all layers keep
    PyTorch's default initialisation (the code initialises only the BNNeck).

    Args:
        channels: C of the map x (layer3: 16 * base_width).
        token_dim: h * w of x (the MHA width).
        num_heads: attention heads (see :func:`mimb_heads`).
        guide_channels: channels of the guide map, None for the self-attention block.
        guide_stride: 4 (guide at H/4: stem or layer1 output) or 2 (H/8: layer2 output).

    Shapes:
        forward(x (B, C, h, w), guide (B, Cg, s*h, s*w) or None) -> (B, C, h, w).

    Raises:
        ValueError: C not divisible by 4, an unknown ``guide_stride``, a map whose h*w is
            not ``token_dim``, a guide given to (or missing from) the block.
    """

    def __init__(self, channels: int, token_dim: int, num_heads: int, guide_channels: int | None = None, guide_stride: int = 4) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"MIMB channels must be divisible by 4, got {channels}")
        tokens = channels // 4
        self.token_dim = token_dim
        self.narrow = nn.Conv2d(channels, tokens, 1)
        self.broad = nn.Conv2d(tokens, channels, 1)
        self.ln_1 = _LayerNorm32(token_dim)
        self.ln_2 = _LayerNorm32(token_dim)
        self.attn = nn.MultiheadAttention(token_dim, num_heads, batch_first=True)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(token_dim, 4 * token_dim)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * token_dim, token_dim)),
        ]))
        self.resize: nn.Module | None = None
        self.ln_guide: nn.Module | None = None
        if guide_channels is not None:
            if guide_stride not in _GUIDE_RESIZE:
                raise ValueError(f"guide_stride must be one of {sorted(_GUIDE_RESIZE)}, got {guide_stride}")
            kernel, stride, padding = _GUIDE_RESIZE[guide_stride]
            self.resize = nn.Conv2d(guide_channels, tokens, kernel, stride, padding)
            self.ln_guide = _LayerNorm32(token_dim)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if h * w != self.token_dim:
            raise ValueError(f"MIMB block built for {self.token_dim} tokens per channel, got a {h} x {w} map")
        if (guide is None) != (self.resize is None):
            raise ValueError("a guided MIMB block needs its guide map; the self-attention block takes none")
        t = self.ln_1(self.narrow(x).flatten(2))  # (B, C, h, w) -> (B, C/4, h*w)
        if guide is None:
            t = t + self.attn(t, t, t, need_weights=False)[0]
        else:
            g = self.resize(guide)  # (B, Cg, s*h, s*w) -> (B, C/4, h, w)
            if g.shape[-2:] != (h, w):
                raise ValueError(f"guide map resized to {tuple(g.shape[-2:])}, expected {(h, w)}")
            g = self.ln_guide(g.flatten(2))  # (B, C/4, h*w)
            t = t + 0.1 * g
            t = t + self.attn(g, g, t, need_weights=False)[0]  # query = key = guide, value = deep map
        t = t + self.mlp(self.ln_2(t))
        return self.broad(t.reshape(b, -1, h, w))  # (B, C/4, h*w) -> (B, C, h, w)


class MIMB(nn.Module):
    """The four MIMB blocks after layer3 (model.py ``layerATT0..3``), applied in sequence.

    Block i >= 1 takes block i-1's output as x; the guides are the stem output (block 0),
    the layer1 output (block 1) and the layer2 output (block 2); block 3 is
    self-attention. At 384 x 192 (w = 64): x 1024 x 24 x 12, guides 64 x 96 x 48,
    256 x 96 x 48, 512 x 48 x 24; 256 tokens of width 288, 32 heads.

    Args:
        base_width: ResNet stem width w (64).
        size3: (h, w) of the layer3 map, (H/16, W/16).

    Shapes:
        forward(x3 (B, 16w, h, w), guides ((B, w, 4h, 4w), (B, 4w, 4h, 4w), (B, 8w, 2h, 2w)))
        -> (B, 16w, h, w).
    """

    def __init__(self, base_width: int, size3: tuple[int, int]) -> None:
        super().__init__()
        c1, c2, c3, _ = stage_channels(base_width)
        token_dim = size3[0] * size3[1]
        heads = mimb_heads(token_dim)
        self.blocks = nn.ModuleList([
            MIMBBlock(c3, token_dim, heads, base_width, 4),  # guide: stem output, H/4
            MIMBBlock(c3, token_dim, heads, c1, 4),  # guide: layer1 output, H/4
            MIMBBlock(c3, token_dim, heads, c2, 2),  # guide: layer2 output, H/8
            MIMBBlock(c3, token_dim, heads),  # self-attention
        ])

    def forward(self, x3: torch.Tensor, guides: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x3
        for block, guide in zip(self.blocks, (*guides, None)):
            x = block(x, guide)
        return x


# --------------------------------------------------------------------------- network


class MSCMNet(nn.Module):
    """MSCMNet: QFE (4 stems) + AGW body (non-local C/2) + MIMB after layer3 + GeM + BNNeck.

    Args:
        cfg: :class:`common.config.Config`; uses ``cfg.data.height/width`` (the MIMB token
            width is (H/16) * (W/16)) and ``cfg.fusion.backbone`` (layers, base_width,
            last_stride, nonlocal_blocks, pretrained). ``nonlocal_inter_channels`` is
            ignored: MSCMNet's non-local width is C / 2 (module docstring).
        num_classes: training identities.

    Shapes:
        ``forward(inputs)``: inputs {"vis", "vis_aug", "ir", "ir_aug"} (any subset), each
        (B_s, 3, H, W) ImageNet-normalised float -> dict, rows in the order of
        :data:`STREAMS` whatever the dict's order:
        ``feat_pre_bn`` (N, C) float32 GeM feature (what QCT sees), ``feat_post_bn``
        (N, C), ``logits`` (N, num_classes), ``source_row`` (N,) int64: the row of each
        output in the loop's ``[vis; ir]`` image batch (vis and vis_aug rows point at the
        same visible image). C = 32 * base_width (2048).

    Raises:
        ValueError: an unknown stream name, or the two streams of a modality with
            different batch sizes.
    """

    method = "mscmnet"

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        bb = cfg.fusion.backbone
        self.backbone = AGWBackbone(STREAMS, tuple(bb.layers), bb.base_width, bb.last_stride, tuple(bb.nonlocal_blocks),
                                    nonlocal_inter_channels=0)  # 0 = C / 2, MSCMNet's Non_local(reduc_ratio=2)
        self.backbone.load_imagenet(bb.pretrained)  # every stem and the body, as the code's resnet50(pretrained=True)
        self.mimb = MIMB(bb.base_width, (cfg.data.height // 16, cfg.data.width // 16))
        self.gem = GeM(3.0)
        self.bnneck = BNNeck(self.backbone.out_channels, num_classes)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at the full learning rate (build_optimizer.py: bottleneck and
        classifier); stems, body, non-local blocks and the MIMB get ``lr * 0.1``."""
        return [self.bnneck]

    def _body(self, x0: torch.Tensor) -> torch.Tensor:
        """Shared layers with the MIMB after layer3: (B, w, H/4, W/4) -> (B, 32w, H/16, W/16)."""
        x1 = self.backbone._run_stage(1, x0)  # (B, 4w, H/4, W/4)
        x2 = self.backbone._run_stage(2, x1)  # (B, 8w, H/8, W/8)
        x3 = self.backbone._run_stage(3, x2)  # (B, 16w, H/16, W/16)
        x = self.mimb(x3, (x0, x1, x2))  # (B, 16w, H/16, W/16), replaces x3
        return self.backbone._run_stage(4, x)  # (B, 32w, H/16, W/16) at last stride 1

    def _head(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        feat_pre_bn = self.gem(self._body(x0))  # (B, 32w, h, w) -> (B, 32w), float32
        feat_post_bn, logits = self.bnneck(feat_pre_bn)
        return {"feat_pre_bn": feat_pre_bn, "feat_post_bn": feat_post_bn, "logits": logits}

    def forward(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        unknown = set(inputs) - set(STREAMS)
        if unknown:
            raise ValueError(f"MSCMNet streams are {STREAMS}; got unknown {sorted(unknown)}")
        names = [s for s in STREAMS if s in inputs]
        sizes = {s: inputs[s].shape[0] for s in names}
        for a, b in TEST_STEMS.values():
            if a in sizes and b in sizes and sizes[a] != sizes[b]:
                raise ValueError(f"streams '{a}' and '{b}' are two views of the same images; got batch sizes {sizes[a]} and {sizes[b]}")
        n_vis = sizes.get("vis", sizes.get("vis_aug", 0))
        device = inputs[names[0]].device
        source_row = torch.cat([torch.arange(sizes[s], device=device) + (n_vis if s in _INFRARED_STREAMS else 0) for s in names])
        x0 = torch.cat([self.backbone.stems[s](inputs[s]) for s in names])  # (N, w, H/4, W/4)
        return {**self._head(x0), "source_row": source_row}

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post") -> torch.Tensor:
        """L2-normalised test features (B, 32w), float32.

        Each image goes through both stems of its modality and the two stem outputs are
        averaged (model.py ``modal`` 1 / 2: ``(visible_module(x) + visible_moduleA(x)) / 2``),
        then the shared body, MIMB, GeM and BNNeck. ``feature`` "post" is the code's
        l2norm(bottleneck) "fc" feature, "pre" its l2norm(GeM) "pool" feature.

        Args:
            inputs: {"vis": (B, 3, H, W)} and/or {"ir": (B, 3, H, W)} normalised images;
                rows are concatenated in the dict's order.

        Raises:
            ValueError: a stream other than "vis"/"ir", or an unknown ``feature``.
        """
        if feature not in ("pre", "post"):
            raise ValueError(f"feature must be 'pre' or 'post', got {feature!r}")
        stems = self.backbone.stems
        parts = []
        for name, x in inputs.items():
            if name not in TEST_STEMS:
                raise ValueError(f"extract takes 'vis' or 'ir' images, got stream '{name}'")
            first, second = TEST_STEMS[name]
            parts.append((stems[first](x) + stems[second](x)) / 2)  # (B, w, H/4, W/4)
        out = self._head(torch.cat(parts))
        return F.normalize(out["feat_post_bn" if feature == "post" else "feat_pre_bn"].float(), dim=1)


# --------------------------------------------------------------------------- loss


def qct_loss(features: torch.Tensor, labels: torch.Tensor, is_ir: torch.Tensor, margin: float = 0.7) -> torch.Tensor:
    """Quadruple centre triplet loss, as loss.py ``QuarCenterTripletLoss.forward`` computes it.

    With f_i the feature of row i (all four views), y_i its identity:

    * cross-modality pull: c_other(i) = mean feature of the rows of the *other* modality
      (both of its views) with identity y_i (``centers_dual``);
      pull = mean_i ||f_i - c_other(i)||.
    * centre push: c_k = mean feature of all rows (4 views) of identity k (``centers``);
      d_ij = ||f_i - c_{y_j}|| (``comp_dist``: sqrt(clamp(d^2, 1e-12)));
      push_i = mean over rows j with y_j != y_i of max(0, margin - d_ij), i.e. the centre
      of each other identity weighted by its number of rows; push = mean_i push_i.
    * loss = (pull + push) / 2. The code's third term ``a * ||f - center_quar||`` has
      a = 0 and is left out; ``k_size`` is never read by this forward (no anchor
      sub-sampling, no hard mining: every anchor, every negative centre).

    Deviations (none matter on the code's batches): the code pairs row i of the visible
    half with the centre of infrared row i's identity, i.e. it assumes the visible and
    infrared halves list the same identities in the same order (its IdentitySampler, and
    ours, do); we group by label, equal there and also correct otherwise. Rows without the
    other modality in the batch, or without negatives, would make the code's mean NaN;
    we leave them out of the respective mean. The pull distance is clamped at 1e-12 under
    the square root, as ``comp_dist`` does for the push, so a zero distance has a finite
    gradient.

    Args:
        features: (N, D) float (the pre-BN GeM features; computed in float32).
        labels: (N,) int64 identities of the rows.
        is_ir: (N,) bool modality of the rows.
        margin: hinge margin on sample-to-other-centre distances (0.7).

    Returns:
        Scalar float32 loss.
    """
    f = features.float()
    classes, inverse = labels.unique(return_inverse=True)
    k = classes.numel()
    onehot = F.one_hot(inverse, k).to(f.dtype)  # (N, K)
    counts = onehot.sum(dim=0)  # (K,) rows per identity
    centres = onehot.t() @ f / counts.unsqueeze(1)  # (K, D), all four views
    modality = is_ir.long()
    sums = f.new_zeros(2, k, f.shape[1]).index_put_((modality, inverse), f, accumulate=True)  # (2, K, D)
    mod_counts = f.new_zeros(2, k).index_put_((modality, inverse), torch.ones_like(f[:, 0]), accumulate=True)  # (2, K)
    other = 1 - modality
    other_counts = mod_counts[other, inverse]  # (N,)
    c_other = sums[other, inverse] / other_counts.clamp(min=1).unsqueeze(1)  # (N, D)
    has_other = (other_counts > 0).to(f.dtype)
    pull_i = (f - c_other).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()  # (N,)
    pull = (pull_i * has_other).sum() / has_other.sum().clamp(min=1)
    d2 = f.pow(2).sum(dim=1, keepdim=True) + centres.pow(2).sum(dim=1).unsqueeze(0) - 2.0 * f @ centres.t()
    dist = d2.clamp(min=1e-12).sqrt()  # (N, K)
    neg_weight = (1.0 - onehot) * counts.unsqueeze(0)  # (N, K): rows of each other identity
    neg_rows = neg_weight.sum(dim=1)  # (N,)
    push_i = (F.relu(margin - dist) * neg_weight).sum(dim=1) / neg_rows.clamp(min=1)
    has_neg = (neg_rows > 0).to(f.dtype)
    push = (push_i * has_neg).sum() / has_neg.sum().clamp(min=1)
    return (pull + push) / 2


def mscmnet_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe, *, margin: float = 0.7,
                 k_size: int = 4, qct_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """ID + QCT over the four views (train.py: ``loss = loss_id + loss_tri``).

    The loop's labels cover its image batch ``[vis; ir]``; each output row carries the row
    of its image (``outputs["source_row"]``), so the view labels are
    ``labels[source_row]`` = ``cat(label_vis, label_vis, label_ir, label_ir)``, as
    train.py's ``torch.cat((label1, label1, label2, label2))``.

    Args:
        outputs: :meth:`MSCMNet.forward` outputs.
        labels: (2n,) int64 identities of the loop's batch, rows visible first.
        is_ir: (2n,) bool modality of those rows.
        recipe: :class:`MSCMNetRecipe`; ``id_weight`` scales the ID term.
        margin: QCT margin (0.7, train.py).
        k_size: accepted for parity with ``QuarCenterTripletLoss(k_size=4, ...)``; its
            forward never uses it, nor do we.
        qct_weight: weight of the QCT term (1 in train.py).

    Returns:
        {"id": CE over all view rows (no label smoothing), "qct": :func:`qct_loss` on
        ``feat_pre_bn``, "total": id_weight * id + qct_weight * qct, "acc": identity
        accuracy over the view rows}, scalar float32 tensors.

    Raises:
        ValueError: outputs without ``source_row`` (not from :class:`MSCMNet`), or labels
            and is_ir of different lengths, or a non-positive ``k_size``.
    """
    if "source_row" not in outputs:
        raise ValueError("mscmnet_loss needs outputs['source_row'] from MSCMNet.forward")
    if labels.shape != is_ir.shape or labels.ndim != 1:
        raise ValueError(f"labels and is_ir must be (2n,) alike, got {tuple(labels.shape)} and {tuple(is_ir.shape)}")
    if k_size < 1:
        raise ValueError(f"k_size must be >= 1, got {k_size}")
    rows = outputs["source_row"]
    view_labels = labels[rows]  # (4n,) cat(l_vis, l_vis, l_ir, l_ir)
    view_is_ir = is_ir[rows]
    loss_id = identity_loss(outputs["logits"], view_labels)
    loss_qct = qct_loss(outputs["feat_pre_bn"], view_labels, view_is_ir, margin)
    total = recipe.id_weight * loss_id + qct_weight * loss_qct
    acc = (outputs["logits"].argmax(dim=1) == view_labels).float().mean()
    return {"id": loss_id, "qct": loss_qct, "total": total, "acc": acc}


# --------------------------------------------------------------------------- augmentation

class MSCMNetAugment(nn.Module):
    """MSCMNet's four training views, batched on the device.

    build_transforms.py at commit 5b5f874, per image (data_loader.py applies
    ``transform_color1/2`` to each visible image, ``transform_thermal1/2`` to each infrared
    one, every transform with its own random draws):

    | view      | transform (in order)                                                        |
    |-----------|-----------------------------------------------------------------------------|
    | "vis"     | RandomGrayscale(0.5), pad 10 + crop, flip, normalise, ChannelRandomErasing(0.5) |
    | "vis_aug" | pad 10 + crop, flip, normalise, ChannelRandomErasing(0.5), ChannelExchange(2) |
    | "ir"      | pad 10 + crop, flip, normalise, ChannelRandomErasing(0.5), ChannelAdapGray(0.5) |
    | "ir_aug"  | ColorJitter(brightness 0.5), pad 10 + crop, flip, normalise, ChannelRandomErasing(0.5), ChannelT(0.5) |

    Normalisation is ImageNet's; erasing, ChannelExchange, ChannelAdapGray and ChannelT act
    on the normalised tensor, as in the code. ChannelAdapGray therefore does change
    infrared images, although their raw channels are equal (see
    :func:`common.data.augment.adaptive_gray_mscmnet`; MSCMNet issue #4 says it leaves them unchanged, true only
    before normalisation). Random draws use torch's global generator on the images' device.
    Deviation: float images, so no uint8 rounding after grayscale and brightness.

    Args:
        pad, flip_p, gray_p, erasing_p, adap_gray_p, brightness, channel_t_p: the code's
            settings (10, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5); tests switch single steps off.

    Shapes:
        ``forward(images01 (2n, 3, H, W) float [0, 1], is_visible (2n,) bool)`` -> (views,
        None): views {"vis", "vis_aug"}: (n_vis, 3, H, W) and {"ir", "ir_aug"}: (n_ir, 3, H, W),
        ImageNet-normalised float, channels_last; rows in the batch order of each modality;
        None: MSCMNet trains on no partners (the views' interface is
        :class:`common.data.augment.CajViews`').

    Raises:
        TypeError: non-float images or a non-bool ``is_visible``. ValueError: shapes, or
            partners given.
    """

    def __init__(self, pad: int = 10, flip_p: float = 0.5, gray_p: float = 0.5, erasing_p: float = 0.5, adap_gray_p: float = 0.5,
                 brightness: float = 0.5, channel_t_p: float = 0.5) -> None:
        super().__init__()
        self.pad, self.flip_p, self.gray_p, self.erasing_p = pad, flip_p, gray_p, erasing_p
        self.adap_gray_p, self.brightness, self.channel_t_p = adap_gray_p, brightness, channel_t_p

    def _geometry_and_normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = imagenet_normalize(pad_crop_flip(x, self.pad, self.flip_p))
        return random_erasing(x, self.erasing_p) if self.erasing_p > 0 else x

    @torch.no_grad()
    def forward(self, images01: torch.Tensor, is_visible: torch.Tensor,
                partners: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], None]:
        if partners is not None:
            raise ValueError("MSCMNet's views take no partners")
        if not images01.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got {images01.dtype}")
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images01.shape)}")
        if is_visible.dtype != torch.bool:
            raise TypeError(f"is_visible must be bool, got {is_visible.dtype}")
        if is_visible.shape != images01.shape[:1]:
            raise ValueError(f"is_visible must be ({images01.shape[0]},), got {tuple(is_visible.shape)}")
        is_visible = is_visible.to(images01.device)
        vis, ir = images01[is_visible], images01[~is_visible]
        views = {
            "vis": self._geometry_and_normalise(random_grayscale(vis, self.gray_p)),
            "vis_aug": channel_exchange(self._geometry_and_normalise(vis)),
            "ir": adaptive_gray_mscmnet(self._geometry_and_normalise(ir), self.adap_gray_p),
            "ir_aug": channel_t(self._geometry_and_normalise(brightness_jitter(ir, self.brightness)), self.channel_t_p),
        }
        return {name: v.contiguous(memory_format=torch.channels_last) for name, v in views.items()}, None


@dataclass(frozen=True)
class MSCMNetRecipe(Recipe):
    """MSCMNet's recipe keys beyond the shared ones (Hua-XC/MSCMNet@5b5f874 train.py).

    Attributes:
        qct_weight: weight of the quadruple centre triplet loss (train.py ``loss_id + loss_tri``: 1).
        triplet_margin: QCT margin (``QuarCenterTripletLoss(k_size=4, margin=0.7)``).
    """

    qct_weight: float = at_least(0)
    triplet_margin: float = at_least(0)


def recipe_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe: MSCMNetRecipe) -> dict[str, torch.Tensor]:
    """MSCMNet's ID + QCT with the recipe's QCT weight and margin (paper profile: 1, 0.7)."""
    return mscmnet_loss(outputs, labels, is_ir, recipe, margin=recipe.triplet_margin, qct_weight=recipe.qct_weight)


SPEC = MethodSpec(name="mscmnet", summary="MSCMNet (Hua et al., 2023): four stems, MIMB, QCT loss; 2 views per image",
                  recipe_type=MSCMNetRecipe, build=MSCMNet, loss=recipe_loss,
                  view_augment=lambda size, r: MSCMNetAugment(pad=r.pad, flip_p=r.flip_p, erasing_p=r.erasing_p))
