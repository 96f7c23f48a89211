"""AGW (Ye et al., TPAMI 2021): two-stream ResNet-50 + non-local + GeM + BNNeck, ID + WRT.

Code: mangye16/Cross-Modal-Re-ID-baseline (model.py ``embed_net``, train.py, loss.py).
Training: identity cross-entropy on the post-BN logits plus WRT on the pre-BN GeM
feature, weights 1 and 1, no label smoothing (AGW). ``hc_weight > 0`` adds a hetero-centre
term (Zhu et al. 2020) on the L2-normalised post-BN feature; 0 in the paper profile. Test feature: the L2-normalised post-BN
feature (``--feature post``, AGW's "fc") or the pre-BN GeM feature ("pool").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stage2_fusion.backbone import build_backbone
from stage2_fusion.layers import BNNeck, GeM
from stage2_fusion.losses import hetero_centre_loss, identity_loss, wrt_loss


class AGWNet(nn.Module):
    """The AGW re-ID network.

    Shapes:
        ``forward(inputs)`` with inputs {"vis": (Bv, 3, H, W), "ir": (Bi, 3, H, W)}
        normalised images -> dict: ``feat_pre_bn`` (B, C), ``feat_post_bn`` (B, C),
        ``logits`` (B, num_classes), rows visible first; C = 32 * base_width (2048).
    """

    method = "agw"
    needs_partners = False

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.fusion.backbone, ("vis", "ir"))
        self.gem = GeM(3.0)
        self.bnneck = BNNeck(self.backbone.out_channels, num_classes)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at the full learning rate (AGW: bottleneck and classifier)."""
        return [self.bnneck]

    def forward(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        fmap = self.backbone(inputs)  # (B, C, H/16, W/16)
        feat_pre_bn = self.gem(fmap)  # (B, C)
        feat_post_bn, logits = self.bnneck(feat_pre_bn)
        return {"feat_pre_bn": feat_pre_bn, "feat_post_bn": feat_post_bn, "logits": logits}

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post") -> torch.Tensor:
        """L2-normalised test features (B, C), float32; ``feature`` "pre" or "post" BNNeck."""
        out = self.forward(inputs)
        return F.normalize(out["feat_post_bn" if feature == "post" else "feat_pre_bn"].float(), dim=1)


def agw_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe) -> dict[str, torch.Tensor]:
    """ID + WRT: returns ``id``, ``wrt``, ``total`` and ``acc`` (identity accuracy)."""
    loss_id = identity_loss(outputs["logits"], labels)
    loss_wrt, _ = wrt_loss(outputs["feat_pre_bn"], labels)
    total = recipe.id_weight * loss_id + recipe.wrt_weight * loss_wrt
    terms = {"id": loss_id, "wrt": loss_wrt}
    if recipe.hc_weight > 0:  # optional hetero-centre term on the L2-normalised test feature
        terms["hc"] = hetero_centre_loss(F.normalize(outputs["feat_post_bn"], dim=1), labels, is_ir)
        total = total + recipe.hc_weight * terms["hc"]
    acc = (outputs["logits"].argmax(dim=1) == labels).float().mean()
    return {**terms, "total": total, "acc": acc}
