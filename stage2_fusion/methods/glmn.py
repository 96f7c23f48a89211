"""GLMN: Global-to-Local Feature Mining Network (Chen, He, Xiao, MMM 2024).

Public code: cq0907/GFMNet at commit 1746937 ("G" below): ``model_test0.py`` (``embed_net``
with ``share_net = 2``, ``AFAM``, ``ChannelAttention``, ``SpatialAttention``,
``HorizontalMaxPool2d``), ``loss.py`` (``TripletLoss_ADP0``), ``aligned/local_dist.py``
(``hard_example_mining``, ``batch_local_dist1``, ``shortest_dist1``), ``train_ext_test0.py``
(the training script the README runs), ``data_loader0.py`` (``SYSUData``, the transforms
actually used) and ``testa.py`` (test with flip augmentation). The paper text was not
available to us; every fact below is from that code. Its training script imports a
``ChannelAug`` module that G lacks: the channel augmentation and erasing are those of CAJ
(Ye et al., "Channel Augmented Joint Learning for Visible-Infrared Recognition", ICCV 2021),
mangye16/Cross-Modal-Re-ID-baseline:ICCV21_CAJ/ChannelAug.py (``ChannelAdapGray``,
``ChannelRandomErasing``) and ICCV21_CAJ/data_loader.py (``ChannelExchange``), re-implemented
here on whole batches.

Network (:class:`GLMNNet`):

* the CAJ/AGW two-stream ResNet-50 with the modality split after layer1: each modality has
  its own conv1, bn1, maxpool **and layer1** (G ``visible_module``/``thermal_module`` with
  ``share_net=2``); layer2-4 are shared, with non-local blocks after blocks 2, 3 of layer2 and
  3, 4, 5 of layer3 (``non_layers = [0, 2, 3, 0]``), last stride 1;
* AFAM on the concatenated 256-channel layer1 output of both modalities (one module, shared):
  ``NL((CA(x) * x + SA(x) * x) / 2)``: channel attention (CBAM-style: shared 2-layer 1x1 MLP,
  reduction 16, on average- and max-pooled maps, summed, sigmoid) and spatial attention
  (7x7 conv on [channel mean; channel max], sigmoid) in parallel, averaged, then a non-local
  block (theta/phi/g width 1 in G, like AGW's);
* global branch: GeM (p = 3) on the layer4 map, BNNeck (frozen-bias BN1d, bias-free
  classifier);
* aligned local branch (training only): BN2d -> ReLU -> horizontal max-pool into stripes
  (G: ``max_pool2d`` kernel (3, W), i.e. 6 stripes of 3 rows on the 18 x 9 map) -> 1x1 conv
  with bias to 128 channels -> L2-normalised per stripe.

Loss (:func:`glmn_loss`, G ``train_ext_test0.py`` with ``--method adp --alpha 1 --gamma 1
--square 1`` as the README runs it): ``CE + ADP + 0.5 * local``. ADP = CAJ's adaptive
(squared-difference) WRT on the pre-BN GeM feature; local = margin-0.3 triplet on the
aligned stripe distance of each anchor's hardest positive and negative, mined with the
global distance. Note that the alignment in G's released loss is a *greedy* path
(``shortest_dist1``), not AlignedReID's dynamic-programming shortest path
(``shortest_dist``, defined but unused by ``TripletLoss_ADP0``): see
:func:`greedy_alignment_distance`.

Test (G ``testa.py``): each image and its horizontal flip; the network's L2-normalised
features are averaged and L2-normalised again; the descriptor is the post-BN global feature
("FC", best checkpoint chosen by it) or the pre-BN GeM one ("POOL"); the local branch is not
used. :meth:`GLMNNet.extract` does the flip by default, so evaluation gets it without
``--flip`` (which then changes nothing: the feature is already flip-invariant).

Training inputs (:class:`GLMNAugment`, G ``data_loader0.py`` ``SYSUData``): every visible
image gives two independently augmented views, ``"vis"`` (plain) and ``"vis_ca"`` (CAJ
channel exchange), both through the visible layers; infrared images give ``"ir"`` (CAJ
``ChannelAdapGray``). Labels are ``[y_vis; y_vis; y_ir]``.

Recipe (``[fusion.recipes.glmn]`` of the paper profile; G ``train_ext_test0.py`` unless said):

================  ==========================================================================
input             288 x 144 (``--img_h/--img_w``); test: resize, normalise, + flip
sampler           8 identities (``--batch_size 8``, README ``n8``) x 4 images per modality
                  (``--num_pos 4``), images drawn with replacement (utils.py
                  ``IdentitySampler``, as AGW); 32 visible -> 64 visible views + 32 IR rows
augmentation      pad 10 + random crop, flip 0.5; erasing p 0.5 (CAJ ``ChannelRandomErasing``)
                  on every view; channel exchange on ``vis_ca``; ChannelAdapGray p 0.5 on IR
                  (``data_loader0.py``: the ``--augc``/``--rande`` transforms built in the
                  script are never used by ``SYSUData``)
optimiser         SGD, momentum 0.9, Nesterov, weight decay 5e-4, lr 0.1; BN-neck BN and
                  classifier at lr, **everything else (backbone, AFAM, local branch) at 0.1 lr**
schedule          AGW's: lr (e+1)/10 for e < 10, lr for 10-19, 0.1 lr for 20-49, 0.01 lr
                  from 50; epochs 0..100 (``range(start_epoch, 101)``)
loss              CE + ADP (alpha 1, gamma 1, square, clamp 44) + 0.5 x local (margin 0.3)
evaluation        every 2 epochs (``epoch > 0 and epoch % 2 == 0``), best by FC Rank-1 (see below)
seed              0 (``--seed``)
published         README, SYSU-MM01 all-search 73.04 / 69.71 / 56.62 (R1/mAP/mINP);
                  RegDB 87.14 / 80.65 / 66.83
================  ==========================================================================

Evaluation during training and the checkpoint kept, G against ours:

* G (``train_ext_test0.py``): a 0-based loop over epochs 0..100 tests when
  ``epoch > 0 and epoch % 2 == 0``, i.e. after the 3rd, 5th, ..., 101st epoch (odd 1-based
  counts), on SYSU-MM01 gallery trial 0 (``random.seed(0)``), without flip (its ``test()``
  extracts plain features; only ``testa.py`` flips), and saves ``*_best.t`` whenever the FC
  Rank-1 is ``>=`` the best so far (a tie keeps the later epoch). The README's figures are
  ``testa.py`` (flip, 10 trials) on such a ``_best.t`` (its example command names one).
* ours (``eval_every = 2``): after the 2nd, 4th, ..., 100th epoch and the last (101st), on
  the same trial-0 gallery, with the flip of :meth:`GLMNNet.extract` (``testa.py``'s), in
  float32, and ``best.pt`` is replaced only on a strictly better Rank-1 (a tie keeps the
  earlier epoch). So our ``best.pt`` is chosen among other epochs, with another feature,
  than G's ``_best.t``; both are chosen on the test set (optimistic). We report the last
  epoch (``reid.pt``) and, labelled optimistic, ``best.pt``.
* ``testa.py`` scores the unnormalised average of the two normalised features; ours
  normalises it again (cosine). The ranking of a query can differ where the average's norm
  differs between gallery images (benchmarks/fidelity.py compares after normalising).

Deviations: the stripe pooling is written for ``num_stripes`` stripes
(``adaptive_max_pool2d``), the same as G's kernel-(3, W) pooling at 288 x 144 and defined
at other sizes; the greedy alignment is vectorised over the batch (G loops per sample in
Python); G hard-codes 2048/256/128 channels, we scale with ``base_width``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.data.augment import VIEW_MODALITY, VIEW_ORDER, CajViews, view_rows
from dataclasses import dataclass

from common.config import Recipe, at_least
from common.errors import UserError
from common.nets.resnet import Stem, init_resnet_, load_resnet_parts, make_layers, stage_channels
from stage2_fusion.backbone import add_nonlocal_blocks, run_stage
from stage2_fusion.layers import BNNeck, GeM, NonLocalBlock
from stage2_fusion.losses import adp_triplet_loss, identity_loss, pairwise_euclidean, per_view_rows
from stage2_fusion.method_spec import MethodSpec, Modifier, modifiers

LOCAL_DIM = 128  # G model_test0.py: nn.Conv2d(2048, 128, 1)
ATTENTION_REDUCTION = 16  # G ChannelAttention: in_planes // 16 (its ``ratio`` argument is ignored)
SPATIAL_KERNEL = 7  # G SpatialAttention default
ADP_CLAMP = 44.0  # G loss.py TripletLoss_ADP0: clamp_max(diff_pow, 44) (CAJ loss.py TripletLoss_ADP: 88)


# The training recipe is [fusion.recipes.glmn] in common/profiles/paper.toml (288 x 144 input).


# ----------------------------------------------------------------------------- network


class ChannelAttention(nn.Module):
    """CBAM channel attention as G ``ChannelAttention``: one weight per channel in (0, 1).

    a = sigmoid(fc2(relu(fc1(avgpool(x)))) + fc2(relu(fc1(maxpool(x))))), fc1: C -> C/16,
    fc2: C/16 -> C, bias-free 1x1 convolutions shared by both pooled descriptors.

    Shapes: (B, C, H, W) -> (B, C, 1, 1), float.
    """

    def __init__(self, channels: int, reduction: int = ATTENTION_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))  # (B, C, 1, 1)
        peak = self.fc2(self.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))  # (B, C, 1, 1)
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention as G ``SpatialAttention``: one weight per position in (0, 1).

    a = sigmoid(conv7x7([mean_c x; max_c x])), bias-free, zero padding 3.

    Shapes: (B, C, H, W) -> (B, 1, H, W), float.
    """

    def __init__(self, kernel_size: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.conv(pooled))


class AFAM(nn.Module):
    """G's attention module on the modality-specific layer1 output.

    out = NL((CA(x) * x + SA(x) * x) / 2): channel and spatial attention in parallel,
    averaged, then a non-local block (G ``AFAM.forward``; ``Non_local(256)``, whose
    theta/phi/g width is 1 as in AGW).

    Args:
        channels: C (256 in ResNet-50).
        nonlocal_inter_channels: see :class:`stage2_fusion.layers.NonLocalBlock`.

    Shapes: (B, C, H, W) -> (B, C, H, W), float.
    """

    def __init__(self, channels: int, nonlocal_inter_channels: int = 1) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels)
        self.spatial_attention = SpatialAttention()
        self.non_local = NonLocalBlock(channels, nonlocal_inter_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.non_local((self.channel_attention(x) * x + self.spatial_attention(x) * x) / 2.0)


def stripe_max_pool(x: torch.Tensor, num_stripes: int) -> torch.Tensor:
    """Horizontal max-pooling into ``num_stripes`` stripes (top to bottom).

    Stripe s is the maximum over all columns and over rows floor(s H / S) ..
    ceil((s + 1) H / S) - 1 (``adaptive_max_pool2d``); when S divides H these are disjoint
    blocks of H / S rows, which is G's ``max_pool2d(kernel (3, W))`` on its 18 x 9 map.

    Shapes: (B, C, H, W) -> (B, C, S, 1).
    """
    return F.adaptive_max_pool2d(x, (num_stripes, 1))


class LocalBranch(nn.Module):
    """G's aligned local branch: BN2d -> ReLU -> stripe max-pool -> 1x1 conv (bias) -> L2.

    Each stripe feature is divided by sqrt(max(||f||^2, 1e-12)) (G ``embed_net.forward``).

    Shapes: (B, C, H, W) -> (B, S, local_dim) float32, unit-norm along the last axis.
    """

    def __init__(self, channels: int, num_stripes: int = 6, local_dim: int = LOCAL_DIM) -> None:
        super().__init__()
        self.num_stripes = num_stripes
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, local_dim, 1, bias=True)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = stripe_max_pool(self.relu(self.bn(fmap)), self.num_stripes)  # (B, C, S, 1)
        x = self.conv(x).flatten(2).float()  # (B, local_dim, S)
        x = x / x.pow(2).sum(dim=1, keepdim=True).clamp(min=1e-12).sqrt()
        return x.transpose(1, 2)  # (B, S, local_dim)


class ModalityLayers(nn.Module):
    """One modality's own layers: conv1, bn1, relu, maxpool (``stem``) and ``layer1``.

    Shapes: (B, 3, H, W) -> (B, 4w, H/4, W/4).
    """

    def __init__(self, base_width: int, layer1_blocks: int) -> None:
        super().__init__()
        self.stem = Stem(base_width)
        # make_layers builds all four stages; stages 2-4 of one block each are discarded
        self.layer1 = make_layers(base_width, (layer1_blocks, 1, 1, 1))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.stem(x))


class GLMNNet(nn.Module):
    """The GLMN re-ID network (see the module docstring).

    Args:
        cfg: :class:`common.config.Config`; uses ``cfg.fusion.backbone`` (layers, base_width,
            last_stride, nonlocal_blocks for layer2-4, nonlocal_inter_channels, pretrained)
            and its recipe's ``num_stripes`` (6).
        num_classes: training identities.
        local_dim: stripe feature width (G: 128).

    Module names: ``specific.vis.stem.conv1``, ``specific.ir.layer1.0.conv2`` (per
    modality), ``afam``, shared ``layer2``..``layer4`` and ``nonlocal_layer{2,3,4}``,
    ``gem``, ``bnneck``, ``local``.

    Shapes:
        ``forward(inputs)`` with inputs {"vis": (n, 3, H, W), "vis_ca": (n, 3, H, W),
        "ir": (m, 3, H, W)} (any of them; ImageNet-normalised float) -> dict, rows in the
        order vis, vis_ca, ir (B = 2n + m):
        ``feat_pre_bn`` (B, 32w) GeM feature, ``feat_post_bn`` (B, 32w),
        ``logits`` (B, num_classes), ``local`` (B, S, local_dim) unit-norm stripe features,
        ``row_index`` (B,) int64: the row of the loop's ``[vis; ir]`` batch (labels) that
        each output row comes from (a "vis_ca" row repeats its "vis" row).

    Raises:
        UserError: ``nonlocal_blocks[0] > 0`` (layer1 is modality-specific in GLMN and G has
            no layer1 non-local blocks); pretrained weights missing or of another size.
    """

    method = "glmn"

    def __init__(self, cfg, num_classes: int, local_dim: int = LOCAL_DIM) -> None:
        super().__init__()
        bb = cfg.fusion.backbone
        layers = tuple(bb.layers)
        if bb.nonlocal_blocks[0] != 0:
            raise UserError(
                f"GLMN runs layer1 per modality and has no layer1 non-local blocks; set fusion.backbone.nonlocal_blocks[0] = 0 "
                f"(got {list(bb.nonlocal_blocks)})"
            )
        channels = stage_channels(bb.base_width)
        self.specific = nn.ModuleDict({m: ModalityLayers(bb.base_width, layers[0]) for m in ("vis", "ir")})
        _, self.layer2, self.layer3, self.layer4 = make_layers(bb.base_width, layers, bb.last_stride)
        init_resnet_(self)  # the ResNet parts only: the modules below keep their own init
        add_nonlocal_blocks(self, (2, 3, 4), layers, tuple(bb.nonlocal_blocks), bb.base_width, bb.nonlocal_inter_channels)
        self.afam = AFAM(channels[0], bb.nonlocal_inter_channels)
        self.gem = GeM(3.0)
        self.bnneck = BNNeck(channels[3], num_classes)
        self.local = LocalBranch(channels[3], cfg.fusion.recipe(self.method).num_stripes, local_dim)
        self.out_channels = channels[3]
        self.load_imagenet(bb.pretrained)

    def head_modules(self) -> list[nn.Module]:
        """Modules at the full learning rate: G gives it to the BN-neck BN and classifier
        only; AFAM and the local branch train at 0.1 lr with the backbone."""
        return [self.bnneck]

    def load_imagenet(self, spec: str) -> int:
        """Load ImageNet ResNet-50 weights (path, "imagenet" or "none"): conv1/bn1/layer1 into
        both modalities' own layers, layer2-4 into the shared body; AFAM, non-local blocks
        and the heads keep their initialisation.

        Returns:
            Number of tensors loaded (0 for "none").

        Raises:
            UserError: missing file, not a ResNet-50 state dict, or a backbone of another size.
        """
        renames = [{f"layer{i}.": f"layer{i}." for i in (2, 3, 4)}]
        renames += [{"conv1.": f"specific.{m}.stem.conv1.", "bn1.": f"specific.{m}.stem.bn1.", "layer1.": f"specific.{m}.layer1."}
                    for m in self.specific]
        return load_resnet_parts(self, spec, renames, "GLMN backbone")

    def feature_map(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Modality layers, AFAM, shared layer2-4: (B, 32w, H/16, W/16), rows vis, vis_ca, ir.

        Streams of one modality are concatenated before their layers, and AFAM and the
        shared body see the whole batch, as in G (BatchNorm statistics over all rows).

        Raises:
            ValueError: an unknown stream name.
        """
        unknown = set(inputs) - set(VIEW_MODALITY)
        if unknown:
            raise ValueError(f"GLMN has no layers for streams {sorted(unknown)}; streams are {list(VIEW_ORDER)}")
        parts = []
        for modality in ("vis", "ir"):
            xs = [inputs[s] for s in VIEW_ORDER if s in inputs and VIEW_MODALITY[s] == modality]
            if xs:
                parts.append(self.specific[modality](torch.cat(xs, dim=0)))  # (B_m, 4w, H/4, W/4)
        x = self.afam(torch.cat(parts, dim=0))  # (B, 4w, H/4, W/4)
        x = run_stage(self, 2, x)  # (B, 8w, H/8, W/8)
        x = run_stage(self, 3, x)  # (B, 16w, H/16, W/16)
        return run_stage(self, 4, x)  # (B, 32w, H/16, W/16) at last stride 1

    def forward(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        fmap = self.feature_map(inputs)  # (B, 32w, h, w)
        feat_pre_bn = self.gem(fmap)  # (B, 32w)
        feat_post_bn, logits = self.bnneck(feat_pre_bn)
        return {
            "feat_pre_bn": feat_pre_bn, "feat_post_bn": feat_post_bn, "logits": logits,
            "local": self.local(fmap),  # (B, S, local_dim)
            "row_index": view_rows(inputs, fmap.device),
        }

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post",
                flip: bool = True) -> torch.Tensor:
        """L2-normalised test features with G's flip test-time augmentation.

        f = l2(l2(g(x)) + l2(g(flip(x)))) with g the post-BN ("post", G's "FC") or pre-BN
        GeM ("pre", "POOL") global feature (G testa.py ``extract_*_feat``: the average of the
        two normalised features, normalised; halving does not change the result). The
        local branch is not used at test time.

        Args:
            inputs: {"vis": x} or {"ir": x}, x (B, 3, H, W) ImageNet-normalised float.
            feature: "post" or "pre".
            flip: False gives the plain feature l2(g(x)).

        Returns:
            (B, 32w) float32, unit rows.

        Raises:
            ValueError: ``feature`` not "pre"/"post", or not exactly one "vis"/"ir" stream.
        """
        if feature not in ("pre", "post"):
            raise ValueError(f"feature must be 'pre' or 'post', got {feature!r}")
        if len(inputs) != 1 or next(iter(inputs)) not in ("vis", "ir"):
            raise ValueError(f"extract takes one stream, 'vis' or 'ir'; got {sorted(inputs)}")
        (name, x), = inputs.items()
        batch = torch.cat([x, x.flip(-1)], dim=0) if flip else x  # (2B or B, 3, H, W)
        feat_pre_bn = self.gem(self.feature_map({name: batch}))
        feat = feat_pre_bn if feature == "pre" else self.bnneck(feat_pre_bn)[0]
        feat = F.normalize(feat.float(), dim=1)
        if flip:
            feat = F.normalize(feat[: x.shape[0]] + feat[x.shape[0]:], dim=1)
        return feat


# ----------------------------------------------------------------------------- losses


def hard_example_indices(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest positive (largest distance, anchor included) and negative (smallest) of
    each anchor, first index on ties (G aligned/local_dist.py ``hard_example_mining``).

    Shapes: dist (N, N), labels (N,) -> (pos_index (N,), neg_index (N,)) int64.
    """
    same = labels.view(-1, 1).eq(labels.view(1, -1))
    pos = dist.masked_fill(~same, float("-inf")).argmax(dim=1)
    neg = dist.masked_fill(same, float("inf")).argmin(dim=1)
    return pos, neg


def stripe_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stripe-to-stripe distance of paired samples, squashed to [0, 1).

    m_ijk = tanh(d_ijk / 2) = (e^d - 1) / (e^d + 1), d_ijk = Euclidean distance (sqrt of the
    squared distance clamped at 1e-12) between stripe j of a_i and stripe k of b_i
    (G ``batch_euclidean_dist`` + ``batch_local_dist1``).

    Shapes: a (N, S, D), b (N, S, D) -> (N, S, S) float.
    """
    d2 = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1) - 2.0 * a @ b.transpose(1, 2)  # (N, S, S)
    return torch.tanh(d2.clamp(min=1e-12).sqrt() / 2.0)


def greedy_alignment_distance(cost: torch.Tensor) -> torch.Tensor:
    """G's stripe alignment (``shortest_dist1``), vectorised over the batch.

    A path starts at cell (0, 0) of the S x S matrix M and ends at (S-1, S-1). From (j, k)
    it jumps either right along row j to the cheapest column k' > k, or down column k to
    the cheapest row j' > j (first index on ties), whichever cell is cheaper; on a tie it
    goes right; in the last column it can only go down, in the last row only right. The
    distance is (sum of all visited cells, (0, 0) included) / (number of jumps).

    Args:
        cost: (N, S, S) float, S >= 2.

    Returns:
        (N,) float.

    Raises:
        ValueError: not (N, S, S) with S >= 2 (G would divide by zero jumps at S = 1).
    """
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2] or cost.shape[1] < 2:
        raise ValueError(f"expected (N, S, S) with S >= 2, got {tuple(cost.shape)}")
    n, s, _ = cost.shape
    batch = torch.arange(n, device=cost.device)
    cols = torch.arange(s, device=cost.device).view(1, s)
    j = torch.zeros(n, dtype=torch.long, device=cost.device)
    k = torch.zeros_like(j)
    total = cost[:, 0, 0]
    jumps = torch.zeros_like(total)
    for _ in range(2 * (s - 1)):  # every jump moves j or k by at least one
        active = (j < s - 1) | (k < s - 1)
        row, col = cost[batch, j], cost[batch, :, k]  # (N, S): M[j, :] and M[:, k]
        right = row.masked_fill(cols <= k.view(-1, 1), float("inf")).argmin(dim=1)
        down = col.masked_fill(cols <= j.view(-1, 1), float("inf")).argmin(dim=1)
        right_cost = row.gather(1, right.view(-1, 1)).squeeze(1)
        down_cost = col.gather(1, down.view(-1, 1)).squeeze(1)
        go_down = (j < s - 1) & ((k == s - 1) | (right_cost > down_cost))
        total = total + torch.where(active, torch.where(go_down, down_cost, right_cost), torch.zeros_like(total))
        jumps = jumps + active.to(jumps.dtype)
        j = torch.where(active & go_down, down, j)
        k = torch.where(active & ~go_down, right, k)
    return total / jumps


def aligned_local_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Local distance of paired samples: greedy alignment of their stripe distances.

    Shapes: a (N, S, D), b (N, S, D) -> (N,) float.
    """
    return greedy_alignment_distance(stripe_distance(a, b))


def aligned_local_triplet_loss(local: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """G's local triplet: mean_i max(0, D(i, p_i) - D(i, n_i) + margin).

    p_i, n_i are the hardest positive/negative of anchor i under the *global* distance
    ``dist``; D is :func:`aligned_local_distance` (G ``TripletLoss_ADP0``:
    ``MarginRankingLoss(margin=0.3)(local_dist_an, local_dist_ap, 1)``).

    Shapes: local (N, S, D) float, dist (N, N), labels (N,) -> scalar.
    """
    pos, neg = hard_example_indices(dist, labels)
    local = local.float()
    dist_ap = aligned_local_distance(local, local[pos])
    dist_an = aligned_local_distance(local, local[neg])
    return F.relu(dist_ap - dist_an + margin).mean()


def glmn_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe, *, local_weight: float = 0.5,
              local_margin: float = 0.3, adp_alpha: float = 1.0, adp_gamma: float = 1.0, adp_square: bool = True) -> dict[str, torch.Tensor]:
    """GLMN's loss: ``id_weight * CE + wrt_weight * ADP + local_weight * local``.

    G ``train_ext_test0.py``: ``loss_id + loss_tri + loss_local_tri * 0.5`` with
    ``TripletLoss_ADP0(alpha=1, gamma=1, square=1)`` (README command) and margin 0.3.
    CE on the logits, ADP on ``feat_pre_bn``, local triplet on ``local``, all rows.

    Args:
        outputs: :meth:`GLMNNet.forward` outputs (B rows).
        labels: (B,) int64, or the loop's (2n,) ``[labels_vis; labels_ir]``, then expanded
            with ``outputs["row_index"]`` (a "vis_ca" row gets its image's label).
        is_ir: modality of the label rows (unused by the loss terms).
        recipe: :class:`GLMNRecipe` (``id_weight``, ``wrt_weight``).
        local_weight, local_margin: G 0.5 and 0.3.
        adp_alpha, adp_gamma, adp_square: G 1, 1, True.

    Returns:
        ``id``, ``adp``, ``local``, ``total`` and ``acc`` (identity accuracy), scalars.

    Raises:
        ValueError: labels that match neither the outputs nor their ``row_index``.
    """
    logits = outputs["logits"]
    labels, _ = per_view_rows(labels, is_ir, outputs)
    loss_id = identity_loss(logits, labels)
    loss_adp, dist = adp_triplet_loss(outputs["feat_pre_bn"], labels, adp_alpha, adp_gamma, adp_square, clamp=ADP_CLAMP)
    loss_local = aligned_local_triplet_loss(outputs["local"], dist.detach(), labels, local_margin)
    total = recipe.id_weight * loss_id + recipe.wrt_weight * loss_adp + local_weight * loss_local
    acc = (logits.argmax(dim=1) == labels).float().mean()
    return {"id": loss_id, "adp": loss_adp, "local": loss_local, "total": total, "acc": acc}


# ----------------------------------------------------------------------------- augmentation


class GLMNAugment(CajViews):
    """G's training views on whole batches (``data_loader0.py`` ``SYSUData``): CAJ's
    joint-learning views (:class:`common.data.augment.CajViews`: "vis", "vis_ca" with CAJ's
    channel exchange, "ir" with ChannelAdapGray(0.5), channel random erasing on every view)
    with G's one change, its plain visible view erased *before* normalising (the fill is then
    CAJ's mean in [0, 1] units).

    Args:
        size: (H, W) of the images.
        pad, flip_p, erasing_p, gray_p: as CAJ's (G: 10, 0.5, 0.5, 0.5).

    Shapes: as :class:`common.data.augment.CajViews` (GLMN trains on no partners).
    """

    def __init__(self, size: tuple[int, int], pad: int = 10, flip_p: float = 0.5, erasing_p: float = 0.5, gray_p: float = 0.5) -> None:
        super().__init__(size, pad, flip_p, erasing_p, gray_p, erase_plain_before_normalising=True)


@dataclass(frozen=True)
class GLMNRecipe(Recipe):
    """GLMN's recipe keys beyond the shared ones (cq0907/GFMNet@1746937 train_ext_test0.py, README).

    Attributes:
        wrt_weight: weight of the global triplet, CAJ's ADP (``loss_tri``: 1).
        local_weight: weight of the aligned local triplet (``loss_id + loss_tri + 0.5 * loss_local_tri``).
        triplet_margin: margin of the aligned local triplet (``MarginRankingLoss(0.3)``).
        adp_square: ADP on squared distance differences (README ``--square 1``: true); false
            = the non-squared form (ours).
        num_stripes: horizontal stripes of the local branch (model_test0.py: 6).
    """

    wrt_weight: float = at_least(0)
    local_weight: float = at_least(0)
    triplet_margin: float = at_least(0)
    adp_square: bool
    num_stripes: int = at_least(1)


def recipe_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe: GLMNRecipe) -> dict[str, torch.Tensor]:
    """GLMN's ID + ADP + local triplet with the recipe's local weight and margin (0.5, 0.3)
    and ADP form (squared, as its README runs it, unless ``adp_square = false``)."""
    return glmn_loss(outputs, labels, is_ir, recipe, local_weight=recipe.local_weight, local_margin=recipe.triplet_margin,
                     adp_square=recipe.adp_square)


SPEC = MethodSpec(name="glmn", summary="GLMN (GFMNet code): modality layers, AFAM, ADP + aligned local triplet; 2 visible views, 1 infrared",
                  recipe_type=GLMNRecipe, build=GLMNNet, loss=recipe_loss,
                  view_augment=lambda size, r: GLMNAugment(size, pad=r.pad, flip_p=r.flip_p, erasing_p=r.erasing_p),
                  modifiers=modifiers(Modifier("nosquare", "ours: GLMN's ADP triplet without squaring", recipe={"adp_square": False})))
