"""AGW (Ye et al., TPAMI 2021): two-stream ResNet-50 + non-local + GeM + BNNeck, ID + WRT;
and MSO (Gao et al., ACM MM 2021), which is AGW plus edge features.

Code: mangye16/Cross-Modal-Re-ID-baseline (model.py ``embed_net``, train.py, loss.py).
Training: identity cross-entropy on the post-BN logits plus WRT on the pre-BN GeM
feature, weights 1 and 1, no label smoothing (AGW). ``hc_weight > 0`` adds a hetero-centre
term (Zhu et al. 2020) on the L2-normalised post-BN feature; 0 in the paper profile. Test feature: the L2-normalised post-BN
feature (``--feature post``, AGW's "fc") or the pre-BN GeM feature ("pool").

Edges (``recipe.edge`` != "none", :class:`stage2_fusion.edges.EdgeBranch` at the stems):
MSO's PEF loss (``pef_weight``) or our edge fusion; MSO (``--method mso``,
cjjjao/DIP_work:train.py) trains ID + WRT + CMCC (``cmcc_weight``, on the post-BN feature)
+ PEF, all weights 1, with Adam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stage2_fusion.backbone import build_backbone
from stage2_fusion.edges import build_edge_branch
from stage2_fusion.layers import BNNeck, GeM
from stage2_fusion.losses import cmcc_loss, hetero_centre_loss, identity_loss, wrt_loss


class AGWNet(nn.Module):
    """The AGW re-ID network.

    Shapes:
        ``forward(inputs)`` with inputs {"vis": (Bv, 3, H, W), "ir": (Bi, 3, H, W)}
        normalised images -> dict: ``feat_pre_bn`` (B, C), ``feat_post_bn`` (B, C),
        ``logits`` (B, num_classes), rows visible first; C = 32 * base_width (2048); with
        MSO's PEF edges in training also ``pef`` (scalar).
    """

    method = "agw"
    needs_partners = False

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.fusion.backbone, ("vis", "ir"))
        self.edges = build_edge_branch(cfg.fusion.recipes.get(self.method), cfg.fusion.backbone.base_width, cfg.fusion.vgg16)
        self.gem = GeM(3.0)
        self.bnneck = BNNeck(self.backbone.out_channels, num_classes)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at the full learning rate (AGW: bottleneck and classifier)."""
        return [self.bnneck]

    def forward(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        aux: dict[str, list] = {}
        hook = None if self.edges is None else (lambda stem, streams: self.edges(stem, streams, aux))
        fmap = self.backbone(inputs, stem_hook=hook)  # (B, C, H/16, W/16)
        feat_pre_bn = self.gem(fmap)  # (B, C)
        feat_post_bn, logits = self.bnneck(feat_pre_bn)
        out = {"feat_pre_bn": feat_pre_bn, "feat_post_bn": feat_post_bn, "logits": logits}
        if aux.get("pef"):
            out["pef"] = torch.stack(aux["pef"]).mean()
        return out

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post") -> torch.Tensor:
        """L2-normalised test features (B, C), float32; ``feature`` "pre" or "post" BNNeck."""
        out = self.forward(inputs)
        return F.normalize(out["feat_post_bn" if feature == "post" else "feat_pre_bn"].float(), dim=1)


class MSONet(AGWNet):
    """MSO: AGW with edge features at the stems (PEF through VGG16, or fused) and CMCC.

    Gao et al., "MSO: Multi-Feature Space Joint Optimization Network for RGB-Infrared
    Person Re-Identification", ACM MM 2021; cjjjao/DIP_work@5d515159 (model.py, PEF.py,
    loss.py, train.py). The operator is ``recipe.edge`` (MSO edits PEF.py for it; which
    kernels our "sobel" and "prewitt" are, and why: :mod:`stage2_fusion.edges`).

    Learning rate: the paper profile uses train.py's argparse default ``--lr 0.0005`` with
    its Adam (bottleneck and classifier at lr, everything else, the VGG16 of PEF included,
    at 0.1 lr; x0.1 at epoch 20, x0.01 from 25). MSO's README trains with ``--lr 0.1``, the
    command of AGW's SGD baseline copied over: with this Adam it would give 0.1 to the
    heads and 0.01 to the body, far above the rate its Adam line was written for (the
    argparse help says "0.00035 for adam"). We take the code's default; ``lr`` in
    ``[fusion.recipes.mso]`` changes it.
    """

    method = "mso"


def agw_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe) -> dict[str, torch.Tensor]:
    """ID + WRT (+ PEF + CMCC for MSO): returns ``id``, ``wrt`` (``pef``, ``cmcc``, ``hc``),
    ``total`` and ``acc`` (identity accuracy).

    total = id_weight * CE(logits) + wrt_weight * WRT(pre-BN) + pef_weight * PEF
            + cmcc_weight * CMCC(post-BN) + hc_weight * HC(L2-normalised post-BN)
    """
    loss_id = identity_loss(outputs["logits"], labels)
    loss_wrt, _ = wrt_loss(outputs["feat_pre_bn"], labels)
    total = recipe.id_weight * loss_id + recipe.wrt_weight * loss_wrt
    terms = {"id": loss_id, "wrt": loss_wrt}
    if "pef" in outputs:  # MSO's perceptual edge loss, computed at the stems in training
        terms["pef"] = outputs["pef"]
        total = total + recipe.pef_weight * terms["pef"]
    if recipe.cmcc_weight > 0:  # MSO's cross-modality contrastive-centre loss on the BNNeck output
        terms["cmcc"] = cmcc_loss(outputs["feat_post_bn"], labels, is_ir)
        total = total + recipe.cmcc_weight * terms["cmcc"]
    if recipe.hc_weight > 0:  # optional hetero-centre term on the L2-normalised test feature
        terms["hc"] = hetero_centre_loss(F.normalize(outputs["feat_post_bn"], dim=1), labels, is_ir)
        total = total + recipe.hc_weight * terms["hc"]
    acc = (outputs["logits"].argmax(dim=1) == labels).float().mean()
    return {**terms, "total": total, "acc": acc}
