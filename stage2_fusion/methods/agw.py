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

CAJ (Ye et al., "Channel Augmented Joint Learning for Visible-Infrared Recognition", ICCV
2021; mangye16/Cross-Modal-Re-ID-baseline@e817a26 ``ICCV21_CAJ/``) is this network (its
model.py is AGW's, unchanged) trained on CAJ's joint-learning views
(:class:`common.data.augment.CajViews`: a plain and a channel-exchanged view of every visible
image, an infrared view with ChannelAdapGray, channel random erasing on every view) with its
ADP triplet instead of WRT (train_ext.py ``--method adp --alpha 1 --gamma 1 --square 1``,
README): the ablation modifier ``caj`` (``agw-caj``) sets ``views = "caj"``, ``triplet = "adp"``
and ``erasing_p = 0.5`` (CAJ's ChannelRandomErasing on every view), the strongest simple
control of the field (69.88 / 66.89 on SYSU-MM01).

Recipe: :class:`AGWRecipe`, ``[fusion.recipes.agw]`` of the profiles (sources there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from common.config import at_least
from common.data.augment import CajViews, ColourRecipe, view_rows
from common.errors import UserError
from stage2_fusion.backbone import build_backbone
from stage2_fusion.edges import EDGE_MODIFIERS, EdgeRecipe, build_edge_branch
from stage2_fusion.layers import BNNeck, GeM
from stage2_fusion.losses import adp_triplet_loss, cmcc_loss, hetero_centre_loss, identity_loss, per_view_rows, wrt_loss
from stage2_fusion.method_spec import GRAYMIX, MethodSpec, Modifier, modifiers


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
    triplet: str

    def check(self, where: str) -> None:
        super().check(where)
        if self.triplet not in TRIPLETS:
            raise UserError(f"{where}.triplet '{self.triplet}' is unknown; use 'wrt' (AGW) or 'adp' (CAJ)")


#: The global triplet loss: AGW's weighted-regularisation triplet, or CAJ's ADP.
TRIPLETS = ("wrt", "adp")
#: CAJ's ADP settings (ICCV21_CAJ/README.md and main.sh: ``--alpha 1 --gamma 1 --square 1``;
#: loss.py ``TripletLoss_ADP``: ``clamp_max(diff_pow, max=88)``).
CAJ_ADP = {"alpha": 1.0, "gamma": 1.0, "square": True, "clamp": 88.0}


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
        if "vis_ca" in inputs:  # CAJ's views: the image row behind each output row (no batch arithmetic in a plain graph)
            out["row_index"] = view_rows(inputs, feat_pre_bn.device)
        if aux.get("pef"):
            out["pef"] = torch.stack(aux["pef"]).mean()
        return out

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post") -> torch.Tensor:
        """L2-normalised test features (B, C), float32; ``feature`` "pre" or "post" BNNeck."""
        out = self.forward(inputs)
        return F.normalize(out["feat_post_bn" if feature == "post" else "feat_pre_bn"].float(), dim=1)


def agw_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe) -> dict[str, torch.Tensor]:
    """ID + WRT (+ PEF + CMCC for MSO; ADP instead of WRT for CAJ): returns ``id``, ``wrt`` or
    ``adp`` (``pef``, ``cmcc``, ``hc``), ``total`` and ``acc`` (identity accuracy).

    total = id_weight * CE(logits) + wrt_weight * TRI(pre-BN) + pef_weight * PEF
            + cmcc_weight * CMCC(post-BN) + hc_weight * HC(L2-normalised post-BN),
    TRI = WRT (``triplet = "wrt"``) or CAJ's ADP (``"adp"``, :data:`CAJ_ADP`). With CAJ's
    views the labels (and modalities) of the loop's images are spread over the views' rows
    (:func:`stage2_fusion.losses.per_view_rows`: ``cat(y_vis, y_vis, y_ir)``, as train_ext.py).
    """
    labels, is_ir = per_view_rows(labels, is_ir, outputs)
    loss_id = identity_loss(outputs["logits"], labels)
    if recipe.triplet == "adp":
        name, (loss_tri, _) = "adp", adp_triplet_loss(outputs["feat_pre_bn"], labels, CAJ_ADP["alpha"], CAJ_ADP["gamma"],
                                                      CAJ_ADP["square"], clamp=CAJ_ADP["clamp"])
    else:
        name, (loss_tri, _) = "wrt", wrt_loss(outputs["feat_pre_bn"], labels)
    total = recipe.id_weight * loss_id + recipe.wrt_weight * loss_tri
    terms = {"id": loss_id, name: loss_tri}
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


def caj_views(size: tuple[int, int], recipe: AGWRecipe) -> CajViews | None:
    """CAJ's joint-learning views when the recipe asks for them (``views = "caj"``), else None
    (the common augmentation); CAJ's pad, flip and erasing are the recipe's."""
    return CajViews(size, pad=recipe.pad, flip_p=recipe.flip_p, erasing_p=recipe.erasing_p) if recipe.views == "caj" else None


#: CAJ (Ye et al., ICCV 2021) on AGW's network, the strongest simple control: its views and its ADP triplet.
CAJ = Modifier("caj", "CAJ (Ye et al., ICCV 2021): its channel-augmented joint-learning views (2 visible + 1 infrared) and ADP "
               "triplet on AGW's network, as ICCV21_CAJ/train_ext.py", recipe={"views": "caj", "triplet": "adp", "erasing_p": 0.5})

SPEC = MethodSpec(name="agw", summary="AGW (Ye et al., TPAMI 2021): two-stream ResNet, non-local, GeM, BNNeck; ID + WRT",
                  recipe_type=AGWRecipe, build=AGWNet, loss=agw_loss, view_augment=caj_views,
                  modifiers=modifiers(*EDGE_MODIFIERS, GRAYMIX, CAJ))
