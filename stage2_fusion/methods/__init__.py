"""Stage 2 methods, selected by ``--method``: one file each, one registry.

| method  | model | loss | partners | views per image |
|---------|-------|------|----------|-----------------|
| agw     | :class:`~stage2_fusion.methods.agw.AGWNet`         | ID + WRT                       | no  | 1 |
| tsme    | :class:`~stage2_fusion.methods.tsme.TSMENet`       | 10 x (ID + 0.5 HC)             | yes | 1 (+ partner) |
| mso     | :class:`~stage2_fusion.methods.mso.MSONet`         | ID + WRT + CMCC + PEF          | no  | 1 |
| mscmnet | :class:`~stage2_fusion.methods.mscmnet.MSCMNet`    | ID + QCT                       | no  | 2 (4 stems) |
| glmn    | :class:`~stage2_fusion.methods.glmn.GLMNNet`       | ID + ADP + 0.5 aligned local   | no  | 2 visible, 1 infrared |

Each file declares a :class:`~stage2_fusion.method_spec.MethodSpec` (``SPEC``): model
builder, loss, its own recipe dataclass, whether it needs partners, its view augmentation,
whether it takes edge options, the ablation modifiers it accepts. :data:`METHODS` lists
them; everything else (config loading, ``--method`` choices, ``ablate``, training, testing,
inference, export) asks it. Adding a method: its file, one line here, its
``[fusion.recipes.<name>]`` table in both profiles, and its tests (CONTRIBUTING.md).

A model has ``forward(inputs, partners) -> dict`` (training outputs),
``extract(inputs, partners, feature) -> (B, D)`` L2-normalised test features,
``head_modules()`` (trained at the full learning rate; the rest at
``lr * backbone_lr_mult``), and the attribute ``method``. A loss is
``loss(outputs, labels, is_ir, recipe) -> dict`` with ``total`` and ``acc``.

Configs are loaded here (:func:`load_config`, :func:`config_from_dict`) because only the
registry knows each method's recipe type; :mod:`common.config` sits below both stages and
takes the registry as an argument.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from common import config as _config
from common.config import Config
from common.errors import UserError, registered
from stage2_fusion.methods import agw, glmn, mscmnet, mso, tsme
from stage2_fusion.method_spec import LossFn, MethodSpec, Modifier

#: The registry: ``--method`` name -> its spec. A test may add a method from outside the package.
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (agw.SPEC, tsme.SPEC, mso.SPEC, mscmnet.SPEC, glmn.SPEC)}


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``.

    Raises:
        UserError: an unknown name (one line listing the methods).
    """
    return registered(METHODS, name, "--method")


def load_config(profile: str = "demo", config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """:func:`common.config.load_config` with every registered method's recipe type.

    Raises:
        UserError: as :func:`common.config.load_config`.
    """
    return _config.load_config(profile, config_file, overrides, methods=METHODS)


def config_from_dict(table: dict[str, Any]) -> Config:
    """:func:`common.config.config_from_dict` with every registered method's recipe type."""
    return _config.config_from_dict(table, methods=METHODS)


#: Keys that sat in ``[fusion]`` before each method had its own recipe, and where they went.
_LEGACY_FUSION_KEYS = {"embed_dim": (tsme.SPEC.name, "embed_dim"), "num_stripes": (tsme.SPEC.name, "num_stripes"),
                       "num_aux_stripes": (tsme.SPEC.name, "num_aux_stripes"), "tsme_streams": (tsme.SPEC.name, "streams"),
                       "tsme_gate": (tsme.SPEC.name, "gate"), "tsme_iai": (tsme.SPEC.name, "iai")}


#: Keys added after checkpoints were written, with the value every run used before each existed:
#: stage 1's input and identity losses (issue 27: TSME's gray input, no re-ID losses, no probe)
#: and the recipes' views and triplet (CAJ: one view per image, AGW's WRT triplet).
_ADDED_GAN_KEYS = {"input": "gray", "monitor_every": 0, "reid_id_weight": 0.0, "reid_triplet_weight": 0.0,
                   "reid_margin": 0.3, "reid_pretrain_steps": 400, "reid_ids_per_batch": 4}
_ADDED_RECIPE_KEYS = {"views": "single", "triplet": "wrt"}


def config_from_checkpoint(table: dict[str, Any]) -> Config:
    """The configuration stored in a checkpoint, also one written before each method had its
    own recipe type (then every recipe held all methods' keys and TSME's model keys sat in
    ``[fusion]``: those are moved into the recipes, keys a method does not read dropped,
    GLMN's stripes taken from the old shared ``fusion.num_stripes``), or before a key existed
    (filled with the value runs used then: ``_ADDED_GAN_KEYS``, ``_ADDED_RECIPE_KEYS``).

    Raises:
        UserError: as :func:`config_from_dict`.
    """
    table = copy.deepcopy(table)
    fusion = table.get("fusion", {})
    recipes = fusion.get("recipes", {})
    if any(key in fusion for key in _LEGACY_FUSION_KEYS):
        if glmn.SPEC.name in recipes and "num_stripes" in fusion:  # GLMN's local stripes were the shared key too
            recipes[glmn.SPEC.name].setdefault("num_stripes", fusion["num_stripes"])
        for key, (method, new) in _LEGACY_FUSION_KEYS.items():
            value = fusion.pop(key, None)
            if value is not None and method in recipes:
                recipes[method].setdefault(new, value)
        for method, recipe in recipes.items():
            if method in METHODS:
                own = {f for f in METHODS[method].recipe_type.__dataclass_fields__}
                recipes[method] = {k: v for k, v in recipe.items() if k in own}
    if "gan" in table:
        table["gan"] = {**_ADDED_GAN_KEYS, **table["gan"]}
    for method, recipe in recipes.items():
        if method in METHODS:
            own = METHODS[method].recipe_type.__dataclass_fields__
            recipe.update({k: v for k, v in _ADDED_RECIPE_KEYS.items() if k in own and k not in recipe})
    return config_from_dict(table)


def build_method(name: str, cfg: Config, num_classes: int) -> tuple[nn.Module, LossFn]:
    """(model, loss) of method ``name`` for ``num_classes`` training identities.

    Raises:
        UserError: unknown method.
    """
    spec = method_spec(name)
    return spec.build(cfg, num_classes), spec.loss


def build_view_augment(name: str, size: tuple[int, int], recipe) -> nn.Module | None:
    """The method's own batched view augmentation, or None for the common one
    (:class:`common.data.augment.ReidTrainAugment`); a builder may return None too (AGW and
    TSME build CAJ's views only when their recipe asks for ``views = "caj"``)."""
    factory = method_spec(name).view_augment
    return None if factory is None else factory(size, recipe)


def modifier_of(method: str, name: str) -> Modifier:
    """Modifier ``name`` as method ``method`` accepts it.

    Raises:
        UserError: an unknown modifier, or one the method does not accept (naming the methods that do).
    """
    spec = method_spec(method)
    if name in spec.modifiers:
        return spec.modifiers[name]
    takers = [m for m, s in METHODS.items() if name in s.modifiers]
    if not takers:
        known = sorted({k for s in METHODS.values() for k in s.modifiers})
        raise UserError(f"unknown modifier '{name}'; modifiers: {', '.join(known)}")
    raise UserError(f"variant modifier '{name}' applies to {', '.join(takers)}, not {method}")


__all__ = ["METHODS", "MethodSpec", "Modifier", "build_method", "build_view_augment", "config_from_checkpoint", "config_from_dict",
           "load_config", "method_spec", "modifier_of"]
