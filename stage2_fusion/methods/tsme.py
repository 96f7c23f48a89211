"""TSME stage 2: real and generated streams, PwIF, IAI heads.

TSME (Liu et al., TCSVT 2022) runs four ImageNet ResNet-50s (real/generated x
visible/infrared; its model.py ``visible_net_resnet`` / ``thermal_net_resnet``, last stride
1, no non-local blocks). ``streams`` of its recipe (:class:`TSMERecipe`) chooses the layout:

* ``"paper"``: exactly that, four independent ResNets
  (:class:`stage2_fusion.backbone.PerModalityBackbone` for the real and for the generated
  stream);
* ``"agw"``: each stream an AGW backbone (modality-specific stems, shared body, non-local
  blocks), half the parameters.

The *real* stream sees the real images, the *generated* stream their generated partners
(keyed by the source image's modality, as TSME's visible network takes the fake infrared of
visible images). Fusion, heads and loss follow :mod:`stage2_fusion.fusion`:

    total = sum over the 10 heads of [ id_weight * CE + hc_weight * HC(l2norm(embedding)) ]

(TSME train.py: all weights 1, HC weight 0.5.) When ``wrt_weight > 0`` an AGW-style WRT
on the GeM-pooled fused map is added (not in TSME; off in the paper profile).

Test descriptor (TSME test.py): the 6 fused-stripe embeddings after their BN, each
L2-normalised, concatenated (6 x 512 = 3072-d) for ``feature = "post"``; the 6 pooled
fused stripes, each L2-normalised (6 x C) for ``"pre"``. The concatenation is normalised
once more so that the inner product is a cosine in [-1, 1] (ranking unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from common.errors import UserError
from common.config import at_least
from common.data.augment import CajViews, ColourRecipe, view_rows
from stage2_fusion.backbone import build_backbone
from stage2_fusion.edges import EDGE_MODIFIERS, EdgeRecipe, build_edge_branch
from stage2_fusion.fusion import StripeHeads, modality_gate, pwif, stripes
from stage2_fusion.layers import GeM
from stage2_fusion.losses import hetero_centre_loss, identity_loss, per_view_rows, wrt_loss
from stage2_fusion.method_spec import GRAYMIX, PARTNER_MODIFIERS, MethodSpec, Modifier, modifiers


@dataclass(frozen=True)
class TSMERecipe(EdgeRecipe, ColourRecipe):
    """TSME's recipe keys beyond the shared ones, the edge options (on its real stream) and
    the colour options (:class:`common.data.augment.ColourRecipe`).

    Attributes:
        wrt_weight: an AGW-style WRT on the fused GeM feature (not TSME's: 0).
        hc_weight: hetero-centre loss weight per head (TSME train.py: 0.5, hard-coded).
        embed_dim: width of each stripe embedding (TSME ``--low-dim`` 512).
        num_stripes: horizontal stripes of the fused map (TSME model.py: 6).
        num_aux_stripes: stripes of each IAI head group (TSME model.py: 2).
        streams: "paper" (its code: four independent ResNets, visible/infrared x
            real/generated, no non-local blocks) or "agw" (two AGW backbones, real and
            generated, each with modality-specific stems, a shared body and non-local blocks).
        gate: the parameter-free gate on the real stream (TSME model.py; false: ablation).
        iai: the IAI heads on the real and generated maps (TSME model.py; false: ablation,
            the fused heads only).
    """

    wrt_weight: float = at_least(0)
    hc_weight: float = at_least(0)
    embed_dim: int = at_least(1)
    num_stripes: int = at_least(1)
    num_aux_stripes: int = at_least(1)
    streams: str
    gate: bool
    iai: bool

    def check(self, where: str) -> None:
        super().check(where)
        if self.streams not in ("paper", "agw"):
            raise UserError(f"{where}.streams '{self.streams}' is unknown; use 'paper' (TSME's four ResNets) or 'agw'")


class TSMENet(nn.Module):
    """TSME fusion network.

    Shapes:
        ``forward(inputs, partners)``: inputs and partners {"vis": (Bv, 3, H, W),
        "ir": (Bi, 3, H, W)} normalised images (partners[m] = generated partner of
        inputs[m]) -> dict: ``embeddings`` (10, B, embed_dim) and ``logits``
        (10, B, num_classes) for heads [6 fused, 2 real (IAI), 2 generated (IAI)],
        ``feat_pre_bn`` (B, C) GeM of the fused map; rows visible first. Without IAI heads
        (recipe ``iai = false``) only the 6 fused heads.
    """

    method = "tsme"

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__()
        f = cfg.fusion
        r = f.recipe(self.method)
        shared = r.streams == "agw"
        self.real = build_backbone(f.backbone, ("vis", "ir"), shared=shared)
        self.generated = build_backbone(f.backbone, ("vis", "ir"), shared=shared)
        self.edges = build_edge_branch(r, f.backbone.base_width, f.vgg16)  # on the real stems
        channels = self.real.out_channels
        self.num_stripes = r.num_stripes
        self.gate = modality_gate if r.gate else None
        self.fused_heads = StripeHeads(r.num_stripes, channels, r.embed_dim, num_classes)
        self.iai = r.iai
        if self.iai:
            self.real_heads = StripeHeads(r.num_aux_stripes, channels, r.embed_dim, num_classes)
            self.generated_heads = StripeHeads(r.num_aux_stripes, channels, r.embed_dim, num_classes)
        self.gem = GeM(3.0)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at the full learning rate (TSME: feature and class blocks)."""
        return [self.fused_heads, self.real_heads, self.generated_heads] if self.iai else [self.fused_heads]

    def _fused(self, inputs, partners, aux: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if partners is None or set(partners) != set(inputs):
            raise ValueError("TSME needs a generated partner for every input stream")
        aux = {} if aux is None else aux
        hook = None if self.edges is None else (lambda stem, streams: self.edges(stem, streams, aux))
        f_real = self.real(inputs, after_layer3=self.gate, after_layer4=self.gate, stem_hook=hook)  # (B, C, h, w), gated unless ablated
        f_gen = self.generated({m: partners[m] for m in inputs})  # (B, C, h, w)
        return pwif(f_real, f_gen), f_real, f_gen

    def forward(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        aux: dict[str, list] = {}
        fused, f_real, f_gen = self._fused(inputs, partners, aux)
        emb, logits = self.fused_heads(fused)  # (6, B, d), (6, B, classes)
        if self.iai:
            emb_r, log_r = self.real_heads(f_real)  # (2, B, d): real vis and real IR share these heads
            emb_g, log_g = self.generated_heads(f_gen)  # (2, B, d): generated IR and generated vis
            emb, logits = torch.cat([emb, emb_r, emb_g]), torch.cat([logits, log_r, log_g])
        out = {"embeddings": emb, "logits": logits, "feat_pre_bn": self.gem(fused),
               "row_index": view_rows(inputs, fused.device)}  # the image row behind each output row
        if aux.get("pef"):
            out["pef"] = torch.stack(aux["pef"]).mean()
        return out

    @torch.no_grad()
    def extract(self, inputs: dict[str, torch.Tensor], partners: dict[str, torch.Tensor] | None = None, feature: str = "post") -> torch.Tensor:
        """L2-normalised test descriptors (B, 6 * embed_dim) or (B, 6 * C), float32."""
        fused, _, _ = self._fused(inputs, partners)
        if feature == "post":
            parts = self.fused_heads(fused)[0].transpose(0, 1)  # (B, 6, d)
        else:
            parts = stripes(fused, self.num_stripes)  # (B, 6, C)
        parts = F.normalize(parts.float(), dim=2)
        return F.normalize(parts.flatten(1), dim=1)


def tsme_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, is_ir: torch.Tensor, recipe) -> dict[str, torch.Tensor]:
    """Sum over heads of ID + hc_weight * HC (+ wrt_weight * WRT on the fused GeM feature).

    With CAJ's views (``views = "caj"``) the labels and modalities of the loop's images are
    spread over the views' rows (:func:`stage2_fusion.losses.per_view_rows`)."""
    labels, is_ir = per_view_rows(labels, is_ir, outputs)
    logits, embeddings = outputs["logits"], outputs["embeddings"]
    n_heads = logits.shape[0]
    loss_id = sum(identity_loss(logits[h], labels) for h in range(n_heads))
    loss_hc = sum(hetero_centre_loss(F.normalize(embeddings[h].float(), dim=1), labels, is_ir) for h in range(n_heads))
    total = recipe.id_weight * loss_id + recipe.hc_weight * loss_hc
    terms = {"id": loss_id, "hc": loss_hc}
    if "pef" in outputs:  # MSO's edge loss on the real stream's stems (--edge)
        terms["pef"] = outputs["pef"]
        total = total + recipe.pef_weight * terms["pef"]
    if recipe.wrt_weight > 0:
        terms["wrt"], _ = wrt_loss(outputs["feat_pre_bn"], labels)
        total = total + recipe.wrt_weight * terms["wrt"]
    acc = (logits[0].argmax(dim=1) == labels).float().mean()
    return {**terms, "total": total, "acc": acc}


def caj_views(size: tuple[int, int], recipe: TSMERecipe) -> CajViews | None:
    """CAJ's joint-learning views, each with its partner, when the recipe asks for them
    (``views = "caj"``, modifier ``caj``), else None (TSME's one view per image)."""
    return CajViews(size, pad=recipe.pad, flip_p=recipe.flip_p, erasing_p=recipe.erasing_p) if recipe.views == "caj" else None


SPEC = MethodSpec(
    name="tsme", summary="TSME (Liu et al., TCSVT 2022): real + generated streams, PwIF fusion, IAI heads; 10 x (ID + 0.5 HC)",
    recipe_type=TSMERecipe, build=TSMENet, loss=tsme_loss, needs_partners=True, view_augment=caj_views,
    modifiers=modifiers(
        *PARTNER_MODIFIERS,
        Modifier("noiai", "TSME without its IAI heads (the 6 fused heads only)", recipe={"iai": False}),
        Modifier("nogate", "TSME without the gate on the real stream", recipe={"gate": False}),
        Modifier("paperstreams", "TSME's four independent ResNets", recipe={"streams": "paper"}),
        Modifier("agwstreams", "two AGW backbones (shared body, non-local blocks) instead of TSME's four ResNets", recipe={"streams": "agw"}),
        *EDGE_MODIFIERS, GRAYMIX,
        Modifier("caj", "CAJ's channel-augmented joint-learning views (2 visible + 1 infrared, Ye et al., ICCV 2021), each view "
                 "with its partner", recipe={"views": "caj", "erasing_p": 0.5}),
    ),
)
