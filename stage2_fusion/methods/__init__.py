"""Stage 2 methods, selected by ``--method``: each gives a model and its loss.

| method | model | loss | needs generated partners |
|--------|-------|------|--------------------------|
| agw    | :class:`~stage2_fusion.methods.agw.AGWNet`   | ID + WRT                 | no  |
| tsme   | :class:`~stage2_fusion.methods.tsme.TSMENet` | 10 x (ID + 0.5 HC)       | yes |

A model has ``forward(inputs, partners) -> dict`` (training outputs),
``extract(inputs, partners, feature) -> (B, D)`` L2-normalised test features,
``head_modules()`` (trained at the full learning rate; the rest at
``lr * backbone_lr_mult``), and class attributes ``method`` and ``needs_partners``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from common.errors import UserError
from stage2_fusion.methods.agw import AGWNet, agw_loss
from stage2_fusion.methods.tsme import TSMENet, tsme_loss

METHODS: dict[str, tuple[type[nn.Module], Callable]] = {
    "agw": (AGWNet, agw_loss),
    "tsme": (TSMENet, tsme_loss),
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
