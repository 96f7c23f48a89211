"""What a stage-2 method declares about itself: :class:`MethodSpec` and its ablation :class:`Modifier` s.

Each ``stage2_fusion/methods/<name>.py`` ends with ``SPEC = MethodSpec(...)``: its model
builder and loss, its own recipe dataclass (a :class:`common.config.Recipe` subclass holding
only its paper's keys, with their sources), whether it trains and tests on partners from
stage 1, its batched view augmentation (None: the common one,
:class:`common.data.augment.ReidTrainAugment`), whether it takes MSO's edge options (its
recipe extends :class:`stage2_fusion.edges.EdgeRecipe`), and the ablation modifiers it
accepts. :data:`stage2_fusion.methods.METHODS` lists the specs; config loading, ``--method``
choices, ``pipeline ablate``, training, testing, inference and export read them there and
nowhere compare a method's name.

A modifier (``pipeline ablate --variants agw-graymix,tsme-noiai``) is a named change of the
configuration: keys of the method's recipe, keys of the GAN section (a stage-1 change: its
variants get a stage 1 of their own), or the partner source. One modifier object may be
accepted by several methods (``graymix`` by agw, mso and tsme; the edge operators by every
method whose recipe has edge options).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.config import Config, Recipe

#: ``loss(outputs, labels (B,) int64, is_ir (B,) bool, recipe) -> {"total", "acc", <terms>}`` (scalar tensors).
LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, Any], dict[str, torch.Tensor]]
#: ``build(cfg, num_classes) -> model``; the model reads its recipe as ``cfg.fusion.recipe(name)``.
ModelBuilder = Callable[[Config, int], nn.Module]
#: ``view_augment(size (H, W), recipe) -> module(images01 (2n, 3, H, W), is_visible (2n,), partners=None) -> (inputs dict,
#: partners dict or None)``, or None (then the common augmentation): e.g. :class:`common.data.augment.CajViews`.
ViewAugmentBuilder = Callable[[tuple[int, int], Any], nn.Module]


@dataclass(frozen=True)
class Modifier:
    """A named change of a variant's configuration (see the module docstring).

    Attributes:
        name: the word after the method in a variant name (``tsme-noiai``).
        summary: one line: what it changes, and "ours" for our ideas.
        recipe: keys of the method's recipe to set.
        gan: keys of ``[gan]`` to set (a stage-1 change).
        partners: the partner source to train and test with (``"gray"``: the trivial
            partner, no stage 1), or None to keep the method's.
    """

    name: str
    summary: str
    recipe: Mapping[str, Any] = field(default_factory=dict)
    gan: Mapping[str, Any] = field(default_factory=dict)
    partners: str | None = None

    @property
    def changes_stage1(self) -> bool:
        """Whether variants with it need a stage 1 of their own (a ``[gan]`` change)."""
        return bool(self.gan)

    def overrides(self, method: str) -> dict[str, Any]:
        """The config overrides this modifier makes for ``method`` (nested tables)."""
        out: dict[str, Any] = {}
        if self.recipe:
            out["fusion"] = {"recipes": {method: dict(self.recipe)}}
        if self.gan:
            out["gan"] = dict(self.gan)
        return out


@dataclass(frozen=True)
class MethodSpec:
    """Everything the pipeline needs to know of one stage-2 method (see the module docstring).

    Attributes:
        name: ``--method`` name and the key of its recipe table (``[fusion.recipes.<name>]``).
        summary: one line for ``--help`` and the method table (paper, what it trains).
        recipe_type: its recipe dataclass (a :class:`common.config.Recipe` subclass).
        build: :data:`ModelBuilder`; the model has ``forward(inputs, partners) -> dict``,
            ``extract(inputs, partners, feature) -> (B, D)`` L2-normalised features,
            ``head_modules()`` and the attribute ``method`` (= ``name``).
        loss: :data:`LossFn`.
        needs_partners: trains and tests on a partner of every image (TSME).
        view_augment: its own batched view augmentation, or None for the common one.
        modifiers: the ablation modifiers it accepts, by name.
    """

    name: str
    summary: str
    recipe_type: type[Recipe]
    build: ModelBuilder
    loss: LossFn
    needs_partners: bool = False
    view_augment: ViewAugmentBuilder | None = None
    modifiers: Mapping[str, Modifier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.recipe_type) and issubclass(self.recipe_type, Recipe)):
            raise TypeError(f"method {self.name}: recipe_type must be a Recipe dataclass, got {self.recipe_type!r}")
        for key, modifier in self.modifiers.items():
            if key != modifier.name:
                raise ValueError(f"method {self.name}: modifier listed as '{key}' is named '{modifier.name}'")
            fields = {f.name for f in dataclasses.fields(self.recipe_type)}
            unknown = set(modifier.recipe) - fields
            if unknown:
                raise ValueError(f"method {self.name}: modifier '{modifier.name}' sets {sorted(unknown)}, not keys of its recipe")

    @property
    def takes_edges(self) -> bool:
        """Whether its recipe has MSO's edge options (``edge``, ``edge_mode``, ``edge_loss``, ...)."""
        return any(f.name == "edge" for f in dataclasses.fields(self.recipe_type))


def modifiers(*items: Modifier) -> dict[str, Modifier]:
    """``{modifier.name: modifier}`` for a spec's ``modifiers``."""
    return {m.name: m for m in items}


# --------------------------------------------------------------------------- modifiers several methods accept

#: Ours: visible images replaced by a random grey projection (agw, mso, tsme: the common augmentation's ``gray_mix_p``).
GRAYMIX = Modifier("graymix", "ours: visible images replaced by a random grey projection with p = 0.5 "
                   "(common.data.augment.random_gray_mix)", recipe={"gray_mix_p": 0.5})
#: The partner-source control of a method that trains on partners: no stage 1 at all.
GRAY = Modifier("gray", "the same network on trivial partners (visible -> BT.601 gray, infrared -> itself): "
                "the control that tells whether stage 1 adds anything", partners="gray")
#: Ours: the DSGAN generates one grey channel.
GRAYOUT = Modifier("grayout", "ours: the DSGAN generates one grey channel (gan.out_channels = 1)", gan={"out_channels": 1})
#: Ours: the DSGAN epoch chosen by the two-sample test.
TWOSAMPLE = Modifier("twosample", "ours: the DSGAN epoch chosen by the two-sample test, not the last one",
                     gan={"select_by": "two-sample"})
#: Ours: the visible -> infrared generator sees the colour image, not TSME's gray copy.
RGBIN = Modifier("rgbin", "ours: the DSGAN's visible -> infrared generator sees the colour image (gan.input = rgb), "
                 "not TSME's gray copy", gan={"input": "rgb"})
#: Ours, after AlignGAN: identity-aware translation (stage1_dsgan.identity).
IDGAN = Modifier("idgan", "ours, after AlignGAN: ID + triplet losses on the translations through frozen re-ID networks of the "
                 "target modality (stage1_dsgan.identity)", gan={"reid_id_weight": 1.0, "reid_triplet_weight": 1.0})
#: What every method that trains on stage 1's partners accepts.
PARTNER_MODIFIERS: tuple[Modifier, ...] = (GRAY, GRAYOUT, TWOSAMPLE, RGBIN, IDGAN)
