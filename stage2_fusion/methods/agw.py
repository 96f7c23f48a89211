"""AGW (Ye et al., TPAMI 2021): two-stream ResNet-50 + non-local + GeM + BNNeck, ID + WRT.
MSO (:mod:`stage2_fusion.methods.mso`) is this network with edge features.

Code: mangye16/Cross-Modal-Re-ID-baseline (model.py ``embed_net``, train.py, loss.py).
Training: identity cross-entropy on the post-BN logits plus WRT on the pre-BN GeM
feature, weights 1 and 1, no label smoothing (AGW). ``hc_weight > 0`` adds a hetero-centre
term (Zhu et al. 2020) on the L2-normalised post-BN feature; 0 in the paper profile. Test feature: the L2-normalised post-BN
feature (``--feature post``, AGW's "fc") or the pre-BN GeM feature ("pool").

Edges (``recipe.edge`` != "none", :class:`stage2_fusion.edges.EdgeBranch` at the stems):
MSO's PEF loss (``pef_weight``) or our edge fusion; MSO (``--method mso``,
cjjjao/DIP_work:train.py) trains ID + WRT + CMCC (``cmcc_weight``, on the post-BN feature)
+ PEF, all weights 1, with Adam.

Recipe: :class:`AGWRecipe`, ``[fusion.recipes.agw]`` of the profiles (sources there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from common.config import at_least
from common.data.augment import ColourRecipe
from stage2_fusion.backbone import build_backbone
from stage2_fusion.edges import EDGE_MODIFIERS, EdgeRecipe, build_edge_branch
from stage2_fusion.layers import BNNeck, GeM
from stage2_fusion.losses import cmcc_loss, hetero_centre_loss, identity_loss, wrt_loss
from stage2_fusion.method_spec import GRAYMIX, MethodSpec, modifiers


@dataclass(frozen=True)
class AGWRecipe(EdgeRecipe, ColourRecipe):
    """AGW's recipe keys beyond the shared ones (:class:`common.config.Recipe`), the edge
    options (:class:`stage2_fusion.edges.EdgeRecipe`) and the colour options
    (:class:`common.data.augment.ColourRecipe`).

    Attributes:
        wrt_weight: weight of the weighted-regularisation triplet (AGW train.py: 1).
        hc_weight: weight of an optional hetero-centre term (Zhu et al., 2020; 0 for AGW).
        cmcc_weight: MSO's cross-modality contrastive-centre term (MSO loss.py: 1; 0 for AGW).
    """

    wrt_weight: float = at_least(0)
    hc_weight: float = at_least(0)
    cmcc_weight: float = at_least(0)


class AGWNet(nn.Module):
    """The AGW re-ID network.

    Shapes:
        ``forward(inputs)`` with inputs {"vis": (Bv, 3, H, W), "ir": (Bi, 3, H, W)}
        normalised images -> dict: ``feat_pre_bn`` (B, C), ``feat_post_bn`` (B, C),
        ``logits`` (B, num_classes), rows visible first; C = 32 * base_width (2048); with
        MSO's PEF edges in training also ``pef`` (scalar).
    """

    method = "agw"

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.fusion.backbone, ("vis", "ir"))
        self.edges = build_edge_branch(cfg.fusion.recipe(self.method), cfg.fusion.backbone.base_width, cfg.fusion.vgg16)
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


SPEC = MethodSpec(name="agw", summary="AGW (Ye et al., TPAMI 2021): two-stream ResNet, non-local, GeM, BNNeck; ID + WRT",
                  recipe_type=AGWRecipe, build=AGWNet, loss=agw_loss, modifiers=modifiers(*EDGE_MODIFIERS, GRAYMIX))
