"""Stage 2 methods, selected by ``--method``: each gives a model, its loss and, where it
needs its own, its training augmentation.

| method  | model | loss | partners | views per image |
|---------|-------|------|----------|-----------------|
| agw     | :class:`~stage2_fusion.methods.agw.AGWNet`         | ID + WRT                       | no  | 1 |
| tsme    | :class:`~stage2_fusion.methods.tsme.TSMENet`       | 10 x (ID + 0.5 HC)             | yes | 1 (+ partner) |
| mso     | :class:`~stage2_fusion.methods.agw.MSONet`         | ID + WRT + CMCC + PEF          | no  | 1 |
| mscmnet | :class:`~stage2_fusion.methods.mscmnet.MSCMNet`    | ID + QCT                       | no  | 2 (4 stems) |
| glmn    | :class:`~stage2_fusion.methods.glmn.GLMNNet`       | ID + ADP + 0.5 aligned local   | no  | 2 visible, 1 infrared |

A model has ``forward(inputs, partners) -> dict`` (training outputs),
``extract(inputs, partners, feature) -> (B, D)`` L2-normalised test features,
``head_modules()`` (trained at the full learning rate; the rest at
``lr * backbone_lr_mult``), and class attributes ``method`` and ``needs_partners``.
A loss is ``loss_fn(outputs, labels, is_ir, recipe) -> dict`` with ``total`` and ``acc``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from common.errors import UserError
from stage2_fusion.methods.agw import AGWNet, MSONet, agw_loss
from stage2_fusion.methods.glmn import GLMNAugment, GLMNNet, glmn_loss
from stage2_fusion.methods.mscmnet import MSCMNet, MSCMNetAugment, mscmnet_loss
from stage2_fusion.methods.tsme import TSMENet, tsme_loss


def _mscmnet_loss(outputs, labels, is_ir, recipe):
    """MSCMNet's ID + QCT with the recipe's QCT weight and margin (paper profile: 1, 0.7)."""
    return mscmnet_loss(outputs, labels, is_ir, recipe, margin=recipe.triplet_margin, qct_weight=recipe.qct_weight)


def _glmn_loss(outputs, labels, is_ir, recipe):
    """GLMN's ID + ADP + local triplet with the recipe's local weight and margin (0.5, 0.3)
    and ADP form (squared, as its README runs it, unless ``adp_square = false``)."""
    return glmn_loss(outputs, labels, is_ir, recipe, local_weight=recipe.local_weight, local_margin=recipe.triplet_margin,
                     adp_square=recipe.adp_square)


METHODS: dict[str, tuple[type[nn.Module], Callable]] = {
    "agw": (AGWNet, agw_loss),
    "tsme": (TSMENet, tsme_loss),
    "mso": (MSONet, agw_loss),
    "mscmnet": (MSCMNet, _mscmnet_loss),
    "glmn": (GLMNNet, _glmn_loss),
}

# methods that augment each image into several views themselves:
# factory(size (H, W), recipe) -> module(images01 (2n, 3, H, W), is_visible (2n,)) -> inputs dict
VIEW_AUGMENTS: dict[str, Callable[[tuple[int, int], object], nn.Module]] = {
    "mscmnet": lambda size, r: MSCMNetAugment(pad=r.pad, flip_p=r.flip_p, erasing_p=r.erasing_p),
    "glmn": lambda size, r: GLMNAugment(size, pad=r.pad, flip_p=r.flip_p, erasing_p=r.erasing_p),
}


def build_method(name: str, cfg, num_classes: int) -> tuple[nn.Module, Callable]:
    """(model, loss_fn) of method ``name`` for ``num_classes`` training identities.

    Raises:
        UserError: unknown method.
    """
    if name not in METHODS:
        raise UserError(f"unknown --method '{name}'; choose one of: {', '.join(METHODS)}")
    model_cls, loss_fn = METHODS[name]
    return model_cls(cfg, num_classes), loss_fn


def build_view_augment(name: str, size: tuple[int, int], recipe) -> nn.Module | None:
    """The method's own batched view augmentation, or None for the common one
    (:class:`common.data.augment.ReidTrainAugment`)."""
    factory = VIEW_AUGMENTS.get(name)
    return None if factory is None else factory(size, recipe)
