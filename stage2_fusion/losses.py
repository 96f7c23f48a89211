"""Re-ID losses: identity cross-entropy, weighted-regularisation triplet (WRT),
hetero-centre (HC), and MSO's cross-modality contrastive-centre (CMCC) and perceptual edge
features (PEF) losses (see their docstrings).

* WRT: Ye et al., AGW (TPAMI 2021), Eq. 5; code mangye16/Cross-Modal-Re-ID-baseline:loss.py
  ``TripletLoss_WRT``. For anchor i with Euclidean distances d_ij over the whole batch
  (both modalities):
      w+_ij = exp(d_ij) / sum_{k in P(i)} exp(d_ik)      over positives P(i) (i included),
      w-_ij = exp(-d_ij) / sum_{k in N(i)} exp(-d_ik)    over negatives N(i),
      L = mean_i log(1 + exp(sum_j w+_ij d_ij - sum_j w-_ij d_ij)).
  As in the code: distances are sqrt(clamp(d^2, 1e-12)), the softmax denominators carry
  +1e-6, no margin. log(1 + exp(x)) is computed as ``softplus``: AGW's ``SoftMarginLoss``
  (and MSO's copy of it, and CAJ/GLMN's ADP) evaluates log(1 + exp(x)) literally, which is
  inf in float32 for x above about 88.7 (exp overflows) and then poisons the step; softplus
  gives the same value below that and x (not inf) above. A reference bug we do not copy
  (benchmarks/fidelity.py shows the values agree on ordinary inputs).
* HC: Zhu et al., "Hetero-Center Loss for Cross-Modality Person Re-Identification",
  Neurocomputing 2020, Eq. 3; as TSME uses it (heterogeneity_loss.py ``hetero_loss``,
  margin 0, 'l2'): sum over identities of ||c_vis - c_ir||^2 with c the mean embedding of
  an identity's visible (infrared) samples in the batch. TSME chunks the batch assuming
  contiguous identity blocks; we group by label, which is the same on such batches and
  also correct on others.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.weights import Weights, WeightsKind
from common.nets.vgg import VGG16_FILE, VGG16_URL, read_vgg16_state, vgg16_feature_layers


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) Euclidean distances, sqrt(clamp(d^2, min=1e-12)) as in AGW."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


def _softmax_weights(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    masked = values * mask
    max_v = masked.max(dim=1, keepdim=True).values
    e = torch.exp(values - max_v) * mask
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def wrt_loss(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted-regularisation triplet loss (see the module docstring).

    Args:
        features: (N, D) float, pre-BN features of the whole batch.
        labels: (N,) int64 identity labels.

    Returns:
        (loss, correct): scalar float loss; int64 count of anchors whose weighted negative
        distance is >= the weighted positive one (AGW's triplet "accuracy").
    """
    dist = pairwise_euclidean(features.float())
    same = labels.view(-1, 1).eq(labels.view(1, -1))
    is_pos, is_neg = same.float(), (~same).float()
    dist_ap, dist_an = dist * is_pos, dist * is_neg
    furthest_positive = (dist_ap * _softmax_weights(dist_ap, is_pos)).sum(dim=1)
    closest_negative = (dist_an * _softmax_weights(-dist_an, is_neg)).sum(dim=1)
    loss = F.softplus(furthest_positive - closest_negative).mean()  # = SoftMarginLoss(cn - fp, 1)
    return loss, (closest_negative >= furthest_positive).sum()


def hetero_centre_loss(embeddings: torch.Tensor, labels: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
    """Hetero-centre loss: sum over identities of ||mean_vis - mean_ir||^2.

    Args:
        embeddings: (N, D) float (TSME: L2-normalised 512-d part embeddings).
        labels: (N,) int64 identity labels.
        is_ir: (N,) bool modality of each row.

    Returns:
        Scalar float; identities missing from one modality in the batch contribute 0.
    """
    classes, inverse = labels.unique(return_inverse=True)
    n_cls = classes.numel()
    emb = embeddings.float()
    sums = emb.new_zeros(2, n_cls, emb.shape[1])
    counts = emb.new_zeros(2, n_cls)
    modality = is_ir.long()
    sums.index_put_((modality, inverse), emb, accumulate=True)
    counts.index_put_((modality, inverse), torch.ones_like(inverse, dtype=emb.dtype), accumulate=True)
    present = (counts > 0).all(dim=0)  # (n_cls,)
    centres = sums / counts.clamp(min=1).unsqueeze(-1)  # (2, n_cls, D)
    return ((centres[0] - centres[1]).pow(2).sum(dim=1) * present).sum()


def identity_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over training identities; logits (N, C) float, labels (N,) int64."""
    return F.cross_entropy(logits.float(), labels)


# ---------------------------------------------------------------------------------------
# MSO (Gao et al., "MSO: Multi-Feature Space Joint Optimization Network for RGB-Infrared
# Person Re-Identification", ACM MM 2021; code cjjjao/DIP_work, commit 5d515159): the
# cross-modality contrastive-centre (CMCC) loss and the perceptual edge features (PEF) loss.
# MSO trains with ID + WRT + CMCC + PEF, all weights 1 (cjjjao/DIP_work:train.py ``train``).
# ---------------------------------------------------------------------------------------


def cmcc_loss(features: torch.Tensor, labels: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
    """MSO's cross-modality contrastive-centre loss (cjjjao/DIP_work:loss.py ``CMCC``).

    For each identity i of the batch: visible centre c_v,i and infrared centre c_r,i (mean
    feature of its visible / infrared rows), c̄_i = (c_v,i + c_r,i) / 2, and

        d_in,i  = ||c_v,i - c_r,i||                    (Euclidean, not squared)
        d_out,i = min_{j != i} ||c̄_i - c̄_j||          (the closest other identity)
        L = mean_i log(1 + exp(d_in,i - d_out,i)).

    As MSO: every distance is sqrt(clamp(d^2, min=1e-12)); no margin; mean (not sum) over
    identities; applied to the BNNeck output (``feat_bn``, post-BN, not L2-normalised).
    log(1 + exp(.)) is computed as ``softplus``: MSO's loss.py writes
    ``torch.log(1 + torch.exp(x))``, inf for x above about 88.7 in float32 (a reference bug
    we do not copy); below that the values are the same.

    Deviations: MSO splits the batch into 2P equal chunks (``feats.chunk(label_num * 2)``),
    assuming P contiguous visible identity blocks followed by the same P identities in the
    same order in infrared, as AGW's sampler yields them; we group rows by label and
    modality, which gives the same value on such batches and is correct for any order or
    block size. Identities present in only one modality have no cross-modality centre and
    are left out (of the mean and of every d_out); with fewer than two complete
    identities there is no other identity to contrast with and the loss is 0 (MSO would
    fail on the empty minimum).

    Args:
        features: (N, D) float, post-BN features of the whole batch (both modalities).
        labels: (N,) int64 identity labels.
        is_ir: (N,) bool, True for infrared rows.

    Returns:
        Scalar float32 loss, >= 0.

    Raises:
        ValueError: if features is not 2-D or labels / is_ir do not have N entries.
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],) or is_ir.shape != (features.shape[0],):
        raise ValueError(
            f"cmcc_loss expects features (N, D), labels (N,), is_ir (N,); got {tuple(features.shape)}, "
            f"{tuple(labels.shape)}, {tuple(is_ir.shape)}"
        )
    feat = features.float()
    classes, inverse = labels.unique(return_inverse=True)
    n_cls = classes.numel()
    modality = is_ir.long()  # 0 visible, 1 infrared
    sums = feat.new_zeros(2, n_cls, feat.shape[1])
    counts = feat.new_zeros(2, n_cls)
    sums.index_put_((modality, inverse), feat, accumulate=True)
    counts.index_put_((modality, inverse), torch.ones_like(inverse, dtype=feat.dtype), accumulate=True)
    complete = (counts > 0).all(dim=0)  # (n_cls,) identity seen in both modalities
    centre_vis, centre_ir = sums / counts.clamp(min=1).unsqueeze(-1)  # (n_cls, D) each
    d_in = (centre_vis - centre_ir).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()  # (n_cls,)
    centre = (centre_vis + centre_ir) / 2  # (n_cls, D)
    not_self = ~torch.eye(n_cls, dtype=torch.bool, device=feat.device)
    candidate = not_self & complete.view(1, -1)  # (n_cls, n_cls): j != i and j complete
    d_out = pairwise_euclidean(centre).masked_fill(~candidate, float("inf")).amin(dim=1)  # (n_cls,)
    per_identity = F.softplus(d_in - d_out) * complete
    return per_identity.sum() / complete.sum().clamp(min=1)


# The slices of ``vgg16().features`` MSO chains (PEF.py: ``vgg_layer = [5, 7, 7, 7]`` from 5).
PEF_STAGES = ((5, 10), (10, 17), (17, 24), (24, 31))


class PerceptualEdgeLoss(nn.Module):
    """MSO's perceptual edge features (PEF) loss (cjjjao/DIP_work:PEF.py ``PEF_Loss``).

    L_PEF = sum over the 4 stages s of MSE(V_s(...V_1(stem)), V_s(...V_1(edge_C))), where
    V_1..V_4 = torchvision ``vgg16().features[5:10]``, ``[10:17]``, ``[17:24]``, ``[24:31]``,
    each branch chained through the stages (stage s sees its own branch's stage s-1
    output), MSE = mean squared error over all elements (``nn.MSELoss(reduction='mean')``),
    and edge_C the edge map repeated to the stem's C = 64 channels. As MSO
    (``model.py`` ``embed_net.forward``): ``stem`` is both modality stems' outputs
    concatenated along the batch (visible rows, then infrared: ``torch.cat((x1, x2), 0)``),
    so one MSE averages over both modalities; the edge map carries no gradient (MSO builds
    it under ``torch.no_grad``) but its VGG features are not detached, so VGG16 is trained
    through both branches, and the gradient reaches the stems through the stem branch. MSO
    calls ``vgg.eval()``, which changes nothing here (these layers have no dropout or BN).
    Layers 0-4 of VGG16 (which see RGB) and its classifier are unused and not kept.

    VGG16 sits inside the model and is trained with it (MSO's Adam puts it in the
    backbone group, 0.1 x lr, weight decay 5e-4): its parameters require grad.

    The two branches go through each stage as one batch (identical per-branch results:
    these layers have no batch-dependent statistics).

    Args:
        vgg16_weights: local path of a torchvision-layout VGG16 state dict: torchvision's
            ImageNet ``vgg16-397923af.pth`` (from https://download.pytorch.org/models/vgg16-397923af.pth,
            MSO: ``models.vgg16(pretrained=True)``) at the paper width, or the demo's ImageNet
            stand-in at its width (:mod:`common.demo.standin`); read once, never downloaded. None
            (or "" / "none") leaves VGG16 randomly initialised as torchvision does
            (Kaiming-normal fan-out convolutions, zero bias): PEF then compares random VGG
            features, not MSO's setting.
        width_divisor: divides every VGG16 width (paper setting: 1, a 64-channel stem).
            The stem map must have 64 // width_divisor channels; a demo-width model with a
            32-channel stem uses 2. Weights must have the same widths.
        num_stages: how many of MSO's 4 stages to chain (paper: 4, which needs stem maps of
            at least 16 x 16; the demo's 24 x 12 stem maps allow 3).

    Shapes:
        ``forward(stem, edge)``: stem (B, C, h, w) float (any autocast dtype), edge
        (B, 1, h, w) float (:func:`stage2_fusion.edges.edge_map`, 72 x 36 at 288 x 144);
        h, w >= 16 (four 2x2 poolings) -> scalar float32 loss >= 0.

    Raises:
        UserError: ``vgg16_weights`` missing, unreadable, not a VGG16 state dict, or of
            other widths than ``width_divisor`` asks for.
        ValueError: ``width_divisor`` not a positive divisor of 64; (in forward) shapes
            other than the above.
    """

    def __init__(self, vgg16_weights: str | Path | None = None, width_divisor: int = 1, num_stages: int = 4) -> None:
        super().__init__()
        if not 1 <= num_stages <= len(PEF_STAGES):
            raise ValueError(f"num_stages must be 1..{len(PEF_STAGES)}, got {num_stages}")
        if isinstance(width_divisor, bool) or not isinstance(width_divisor, int) or width_divisor < 1 or 64 % width_divisor:
            raise ValueError(f"width_divisor must be a positive divisor of 64, got {width_divisor!r}")
        self.in_channels = 64 // width_divisor
        state = None
        weights = Weights(str(vgg16_weights) if vgg16_weights is not None else "none")
        if weights.kind in (WeightsKind.STANDIN, WeightsKind.REQUIRED):
            raise UserError(f"fusion.vgg16 is '{weights}': pass --vgg16 PATH or none (the pipeline commands resolve "
                            "'demo-standin' to the stand-in's file)")
        if weights.kind is WeightsKind.IMAGENET:
            raise UserError("fusion.vgg16 'imagenet' is not looked up in a cache: pass --vgg16 PATH (torchvision's vgg16-397923af.pth) or none")
        if weights.kind is WeightsKind.PATH:
            state = read_vgg16_state(weights.path)  # checked before anything is built
        layers = vgg16_feature_layers(width_divisor)  # torchvision VGG.__init__'s initialisation
        # keys stages.<s>.<torchvision index>.weight, e.g. stages.0.5.weight = features.5.weight
        self.stages = nn.ModuleList(nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(a, b)))
                                    for a, b in PEF_STAGES[:num_stages])
        if state is not None:
            self._copy_vgg16(state, Path(vgg16_weights))

    def _copy_vgg16(self, state: dict, path: Path) -> None:
        """Copy torchvision's ``features.<i>.*`` tensors into ``stages.<s>.<i>.*``; UserError if one is missing or misshapen."""
        own = self.state_dict()
        loaded = {}
        for s, (a, b) in enumerate(PEF_STAGES[: len(self.stages)]):
            for i in range(a, b):
                for kind in ("weight", "bias"):
                    dst = f"stages.{s}.{i}.{kind}"
                    if dst not in own:  # ReLU / pooling: no parameters
                        continue
                    src = state.get(f"features.{i}.{kind}")
                    if not isinstance(src, torch.Tensor):
                        raise UserError(f"{path} is not a torchvision VGG16 state dict (no features.{i}.{kind}); pass {VGG16_FILE}")
                    if src.shape != own[dst].shape:
                        raise UserError(f"VGG16 weights {path} do not fit PEF's VGG16 for a {self.in_channels}-channel stem "
                                        f"(features.{i}.{kind}: {tuple(src.shape)} in the file, {tuple(own[dst].shape)} here); pass "
                                        f"{VGG16_FILE} for a 64-channel stem, the demo's stand-in (pipeline pretrain) for the demo, or none")
                    loaded[dst] = src
        self.load_state_dict(loaded, strict=True)

    def forward(self, stem: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        c = self.in_channels
        if stem.ndim != 4 or stem.shape[1] != c or edge.ndim != 4 or edge.shape[1] != 1:
            raise ValueError(f"PerceptualEdgeLoss expects stem (B, {c}, h, w) and edge (B, 1, h, w), got {tuple(stem.shape)} and {tuple(edge.shape)}")
        if edge.shape[0] != stem.shape[0] or edge.shape[2:] != stem.shape[2:]:
            raise ValueError(f"stem {tuple(stem.shape)} and edge {tuple(edge.shape)} must share batch and (h, w)")
        edge_c = edge.detach().to(stem.dtype).repeat(1, c, 1, 1)  # (B, 1, h, w) -> (B, C, h, w), as MSO's repeat(1, 64, 1, 1)
        both = torch.cat([stem, edge_c], dim=0)  # (2B, C, h, w): stem rows, then edge rows
        loss = stem.new_zeros((), dtype=torch.float32)
        for stage in self.stages:
            both = stage(both)  # (2B, C_s, h / 2^s, w / 2^s), each half chained from its own branch
            stem_feat, edge_feat = both.chunk(2, dim=0)
            loss = loss + F.mse_loss(stem_feat.float(), edge_feat.float())
        return loss


def adp_triplet_loss(features: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, gamma: float = 1.0,
                     square: bool = True, *, clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CAJ's adaptive weighted triplet loss (Ye et al., ICCV 2021, "enhanced squared
    difference"; mangye16/Cross-Modal-Re-ID-baseline ``ICCV21_CAJ/loss.py`` ``TripletLoss_ADP``,
    and GLMN's copy, cq0907/GFMNet ``loss.py`` ``TripletLoss_ADP0``, global part).

    With Euclidean distances d (sqrt(clamp(d^2, 1e-12))) over the whole batch:
    fp_i = sum_j w+_ij d_ij, w+ = softmax of alpha d over positives (anchor included);
    cn_i = sum_j w-_ij d_ij, w- = softmax of -alpha d over negatives (as WRT, which is
    alpha = 1). Then
    * ``square``: z_i = min(gamma (fp_i - cn_i)^2, clamp), y_i = -1 if fp_i > cn_i else +1,
      L = mean_i log(1 + exp(-y_i z_i)) (SoftMarginLoss);
    * otherwise: L = mean_i log(1 + exp(gamma (fp_i - cn_i))).

    Args:
        features: (N, D) float, pre-BN features.
        labels: (N,) int64.
        clamp: the cap of the squared difference: CAJ 88 (``clamp_max(diff_pow, max=88)``),
            GLMN 44 (its copy's ``max=44``).

    Returns:
        (loss scalar float32, distance matrix (N, N) float32, reused to mine hard examples).
    """
    dist = pairwise_euclidean(features.float())
    same = labels.view(-1, 1).eq(labels.view(1, -1))
    is_pos, is_neg = same.float(), (~same).float()
    dist_ap, dist_an = dist * is_pos, dist * is_neg
    furthest_positive = (dist_ap * _softmax_weights(dist_ap * alpha, is_pos)).sum(dim=1)
    closest_negative = (dist_an * _softmax_weights(-dist_an * alpha, is_neg)).sum(dim=1)
    if square:
        z = (gamma * (furthest_positive - closest_negative).pow(2)).clamp(max=clamp)
        y = torch.where(furthest_positive > closest_negative, -1.0, 1.0)
        loss = F.softplus(-y * z).mean()
    else:
        loss = F.softplus(gamma * (furthest_positive - closest_negative)).mean()
    return loss, dist


def per_view_rows(labels: torch.Tensor, is_ir: torch.Tensor, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels and modalities of a model's output rows.

    The loop's labels cover its image batch ``[vis; ir]``; a model fed several views of an
    image (CAJ's "vis" and "vis_ca", :class:`common.data.augment.CajViews`) returns more rows
    and, in ``outputs["row_index"]``, the image row behind each
    (:func:`common.data.augment.view_rows`).

    Returns:
        (labels (B,), is_ir (B,)) of the output rows: the inputs as they are when the
        outputs have their rows, else indexed by ``row_index``.

    Raises:
        ValueError: more output rows than labels and no matching ``row_index``.
    """
    rows = outputs["logits"].shape[-2]
    if labels.shape[0] == rows:
        return labels, is_ir
    row_index = outputs.get("row_index")
    if row_index is None or row_index.shape[0] != rows:
        raise ValueError(f"{labels.shape[0]} labels for {rows} output rows and no matching row_index")
    return labels[row_index], is_ir[row_index]
