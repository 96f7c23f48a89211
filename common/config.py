"""Run configuration: frozen dataclasses filled from TOML profiles.

A profile (``common/profiles/<name>.toml``) names every setting of a run; ``--config FILE``
and command-line flags override it. The resolved configuration is written into each run
directory as ``config.toml`` (:func:`dump_config`), and reading that file back with
:func:`load_config` reproduces the run's settings exactly.

Profiles shipped:

* ``paper``: the papers' settings (288 x 144 input, ResNet-50, their batch layouts and
  schedules). Sources are cited next to each value in the TOML file.
* ``demo``: what makes ``pipeline run-all`` on the demo dataset finish in minutes on a
  2-core CPU (smaller input, lighter backbone, fewer epochs); each deviation is commented
  in the file.

The profiles are the only source of values: no field of these dataclasses has a default,
and a key that no table gives is refused by name. Each method's recipe
(``[fusion.recipes.<method>]``) is typed by that method's own :class:`Recipe` subclass,
declared in its method file; this module sits below both stages and imports neither, so
loading takes the method registry as an argument (``methods``;
:func:`stage2_fusion.methods.load_config` passes it).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.weights import NONE, Weights, WeightsKind

PROFILES = ("demo", "demo-full", "paper")
AMP_DTYPES = ("bf16", "fp16")


@dataclass(frozen=True)
class DataConfig:
    """Input images and the built-in demo dataset.

    Attributes:
        height, width: network input size in pixels, (H, W) height first; images are
            resized to it once, when the split is decoded into the array cache.
        demo_seed: seed of the generated demo dataset.
        demo_train_ids, demo_val_ids, demo_test_ids: identities per demo split.
        demo_physics: the demo's infrared cameras, "nir" (near-infrared reflectance under
            an active lamp, as SYSU-MM01's and LLCM's) or "thermal" (heat, as RegDB's).
        decode_threads: threads decoding JPEGs into the array cache.
    """

    height: int
    width: int
    demo_seed: int
    demo_train_ids: int
    demo_val_ids: int
    demo_test_ids: int
    demo_physics: str
    decode_threads: int


@dataclass(frozen=True)
class GanConfig:
    """Stage 1, the TSME DSGAN (unpaired visible-gray <-> infrared translation).

    Attributes:
        encoder_layers: bottleneck blocks per ResNet stage of the generator's encoder
            ((3, 4, 6, 3) is ResNet-50).
        base_width: channels of the stem (64 in ResNet-50); all widths scale with it.
        disc_widths: PatchGAN discriminator widths (TSME: 128, 128, 256, 512).
        pretrained: path of a torchvision ResNet-50 state dict for the encoders, "imagenet"
            (the torchvision weights cache), "demo-standin" (the demo's ImageNet stand-in,
            :mod:`common.demo.standin`), "none" (from scratch) or "required" (the paper profile:
            training refuses to start until a path or "none" is given).
        epochs, decay_start_epoch: constant learning rate until ``decay_start_epoch``,
            then linear decay to zero at ``epochs`` (CycleGAN schedule).
        steps_per_epoch: optimiser steps per epoch; 0 = max(#visible, #infrared) / batch.
        batch_size: images per domain per step.
        lr, beta1, beta2: Adam settings.
        lambda_cycle, lambda_identity: loss weights (cycle x10, identity x5).
        pool_size: image history pool size for the discriminators (0 disables it).
        image_every: steps between TensorBoard image grids.
        seed: random seed of initialisation and sampling.
        amp: mixed precision on CUDA (ignored on CPU).
        input: what the visible -> infrared generator sees: "gray" (TSME's ``Grayscale(3)``
            copy) or "rgb" (the colour image; ours, ablation modifier ``rgbin``).
        monitor_every: optimiser steps between scores of the generator on identities it never
            trains on (aligned twins: L1, PSNR, SSIM, partner raw-pixel Rank-1; datasets with
            twins only, i.e. the demo); 0 = never.
        reid_id_weight, reid_triplet_weight: weights of the identity-aware translation losses
            (ours, after AlignGAN; ablation modifier ``idgan``; :mod:`stage1_dsgan.identity`):
            cross-entropy and triplet of the translations through frozen re-ID networks of
            the target modality; 0 and 0 = TSME's DSGAN.
        reid_margin: that triplet's margin (on L2-normalised features).
        reid_pretrain_steps: Adam steps that train each re-ID network on real images first.
        reid_ids_per_batch: P identities per GAN batch when the re-ID losses are on
            (``batch_size / P`` images of each per modality).
    """

    encoder_layers: tuple[int, ...]
    base_width: int
    disc_widths: tuple[int, ...]
    pretrained: Weights
    epochs: int
    decay_start_epoch: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    beta1: float
    beta2: float
    lambda_cycle: float
    lambda_identity: float
    pool_size: int
    image_every: int
    seed: int
    amp: bool
    max_nonfinite_steps: int
    out_channels: int
    crop_scale: float
    select_by: str
    select_images: int
    input: str
    monitor_every: int
    reid_id_weight: float
    reid_triplet_weight: float
    reid_margin: float
    reid_pretrain_steps: int
    reid_ids_per_batch: int


@dataclass(frozen=True)
class BackboneConfig:
    """The AGW two-stream ResNet (modality-specific stem, shared layer1-4).

    Attributes:
        layers: bottleneck blocks per stage ((3, 4, 6, 3) is ResNet-50).
        base_width: stem channels (64 in ResNet-50); output channels = 32 * base_width.
        last_stride: stride of layer4 (AGW: 1).
        nonlocal_blocks: non-local blocks after the last n blocks of each stage
            (AGW: (0, 2, 3, 0)).
        nonlocal_inter_channels: theta/phi/g width of the non-local blocks; AGW's code
            runs 1, 0 means C / 2 (the non-local paper's choice).
        pretrained: path of a torchvision ResNet-50 state dict, "imagenet" (the
            torchvision weights cache), "demo-standin" (the demo's ImageNet stand-in,
            :mod:`common.demo.standin`), "none" (from scratch) or "required" (the paper profile:
            training refuses to start until a path or "none" is given).
    """

    layers: tuple[int, ...]
    base_width: int
    last_stride: int
    nonlocal_blocks: tuple[int, ...]
    nonlocal_inter_channels: int
    pretrained: Weights


def at_least(minimum: float) -> Any:
    """A recipe field whose value must be ``>= minimum`` (checked by :meth:`Recipe.check`; no default)."""
    return field(metadata={"at_least": minimum})


def probability() -> Any:
    """A recipe field holding a probability in [0, 1] (checked by :meth:`Recipe.check`; no default)."""
    return field(metadata={"probability": True})


@dataclass(frozen=True)
class Recipe:
    """The keys of a training recipe that every method reads: sampler, optimiser, schedule,
    geometric augmentation, input size and test feature.

    Each method extends it with its own keys (and their sources) in its method file,
    ``stage2_fusion/methods/<name>.py`` (``AGWRecipe``, ``TSMERecipe``, ...): a recipe holds
    only the keys its method reads, and a key of another method's is refused when loaded.
    Values come from the profiles (``[fusion.recipes.<method>]``); no field has a default.

    Attributes:
        ids_per_batch: P identities per batch.
        images_per_id: K images per identity *per modality* (batch = P*K visible + P*K IR).
        sample_with_replacement: images drawn with replacement (AGW) or without (TSME).
        epochs: training epochs.
        steps_per_epoch: 0 = int(max(#visible, #infrared) / (P*K)) + 1, as the AGW code.
        optimizer: "sgd" (AGW, TSME: momentum, Nesterov) or "adam" (MSO).
        lr: learning rate of the new layers (heads); the backbone gets
            ``lr * backbone_lr_mult``.
        momentum, weight_decay, nesterov: SGD settings (Adam uses weight_decay only).
        warmup_epochs: length of the linear warm-up.
        warmup_method, warmup_factor: "agw" (lr * (epoch + 1) / warmup_epochs) or "linear"
            (lr * (f + (1 - f) * epoch / warmup_epochs), f = warmup_factor: MSCMNet).
        milestones, gamma: step decay epochs and factor.
        pad, flip_p, erasing_p: zero-pad + random crop, horizontal flip probability, random
            erasing probability.
        id_weight: weight of the identity cross-entropy.
        height, width: this method's input size (0 = ``data.height`` x ``data.width``;
            MSCMNet trains at 384 x 192).
        eval_every: evaluate on trial 0 every n epochs (0 = only at the end).
        test_feature: "pre" or "post" BNNeck feature this method is tested with; "" =
            ``eval.feature`` (MSO reports its pooled, pre-BN feature).
    """

    ids_per_batch: int
    images_per_id: int
    sample_with_replacement: bool
    epochs: int
    steps_per_epoch: int
    optimizer: str
    lr: float
    backbone_lr_mult: float
    momentum: float
    weight_decay: float
    nesterov: bool
    warmup_epochs: int
    warmup_method: str
    warmup_factor: float
    milestones: tuple[int, ...]
    gamma: float
    pad: int
    flip_p: float
    erasing_p: float
    id_weight: float
    height: int
    width: int
    eval_every: int
    test_feature: str

    def check(self, where: str) -> None:
        """Refuse values a run cannot work with, one line each (``where``: the table's key,
        ``fusion.recipes.<method>``): the shared keys' rules, then the range every field
        declares with :func:`at_least` or :func:`probability`. A method's recipe adds checks
        of its own keys' choices by extending this (``super().check(where)`` first).

        Raises:
            UserError: naming the key, its value and the rule.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "at_least" in f.metadata:
                check_range(value >= f.metadata["at_least"], f"{where}.{f.name}", value, f">= {f.metadata['at_least']}")
            if f.metadata.get("probability"):
                check_range(0 <= value <= 1, f"{where}.{f.name}", value, "a probability in [0, 1]")
        for key, ok, rule in (
            ("ids_per_batch", self.ids_per_batch >= 2, ">= 2 (the triplet losses need another identity)"),
            ("images_per_id", self.images_per_id >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("steps_per_epoch", self.steps_per_epoch >= 0, ">= 0 (0: AGW's int(N / (P * K)) + 1)"),
            ("lr", self.lr > 0, "> 0"),
            ("backbone_lr_mult", self.backbone_lr_mult >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("warmup_factor", 0 < self.warmup_factor <= 1, "in (0, 1]"),
            ("milestones", all(m >= 0 for m in self.milestones), "epochs >= 0"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("pad", self.pad >= 0, ">= 0"),
            ("flip_p", 0 <= self.flip_p <= 1, "a probability in [0, 1]"),
            ("erasing_p", 0 <= self.erasing_p <= 1, "a probability in [0, 1]"),
            ("id_weight", self.id_weight >= 0, ">= 0"),
            ("eval_every", self.eval_every >= 0, ">= 0 (0: only at the end)"),
        ):
            check_range(ok, f"{where}.{key}", getattr(self, key), rule)
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"{where}.optimizer '{self.optimizer}' is unknown; use 'sgd' or 'adam'")
        if self.test_feature not in ("", "pre", "post"):
            raise UserError(f"{where}.test_feature '{self.test_feature}' is unknown; use '', 'pre' or 'post'")
        if self.warmup_method not in ("agw", "linear"):
            raise UserError(f"{where}.warmup_method '{self.warmup_method}' is unknown; use 'agw' or 'linear'")
        if (self.height or self.width) and (self.height % 16 or self.width % 16 or not (self.height and self.width)):
            raise UserError(f"{where}: height x width = {self.height} x {self.width}; give both, multiples of 16 "
                            "(or 0 x 0 for data.height x data.width)")


@dataclass(frozen=True)
class FusionConfig:
    """Stage 2, the re-ID network, whichever method trains it.

    Attributes:
        method: default ``--method`` (a name of the method registry,
            :data:`stage2_fusion.methods.METHODS`).
        backbone: see :class:`BackboneConfig`.
        vgg16: VGG16 weights for MSO's PEF loss (:class:`common.weights.Weights`): a local
            path of torchvision's ImageNet VGG16 (``vgg16-397923af.pth``), "demo-standin"
            (the demo's stand-in, :mod:`common.demo.standin`), "none" (random
            initialisation: not MSO's setting; said at training start) or "required" (the
            paper profile: a run whose method uses PEF refuses to start until a path or
            "none" is given).
        seed: random seed.
        amp: mixed precision on CUDA (ignored on CPU).
        amp_dtype: "bf16" (bfloat16 autocast without a scaler; fp16 + GradScaler where the GPU
            has no bf16) or "fp16" (float16 autocast with a GradScaler, as MSCMNet's train.py
            trains; Hua-XC/MSCMNet:train.py ``amp.autocast`` + ``amp.GradScaler``).
        max_nonfinite_steps: steps with a NaN/inf loss skipped before the run stops
            (:class:`common.guard.NonFiniteGuard`).
        recipes: per-method recipe, keyed by method name; each of its method's own type
            (a subclass of :class:`Recipe`).
    """

    method: str
    backbone: BackboneConfig
    vgg16: Weights
    seed: int
    amp: bool
    amp_dtype: str
    max_nonfinite_steps: int
    recipes: dict[str, Recipe]

    def recipe(self, method: str) -> Recipe:
        """The recipe of ``method``; raises UserError if the profile has none."""
        if method not in self.recipes:
            raise UserError(
                f"the config has no recipe for method '{method}' (has: {', '.join(sorted(self.recipes))}); "
                f"add a [fusion.recipes.{method}] table to your --config file"
            )
        return self.recipes[method]


@dataclass(frozen=True)
class EvalConfig:
    """Test protocol defaults.

    Attributes:
        mode: SYSU-MM01 search mode, "all" or "indoor".
        shots: gallery images per identity per camera, 1 (single-shot) or 10 (multi-shot).
        trials: random gallery draws, seeded by the trial index (SYSU-MM01, LLCM).
        direction: RegDB/LLCM search direction, "v2i" (visible query, infrared gallery)
            or "i2v"; SYSU-MM01 queries are always infrared.
        protocol: SYSU-MM01 galleries "random" (AGW's draws) or "official"
            (``rand_perm_cam.mat`` of the MATLAB evaluation).
        perm_file: path of ``rand_perm_cam.mat`` for the official protocol ("" = look in
            the dataset's ``exp/`` folder).
        feature: "pre" or "post" BNNeck feature (AGW evaluates post).
        flip: average features of the image and its horizontal flip.
        batch_size: images per feature-extraction batch.
        amp: extract test features under autocast (bf16, fp16 where bf16 is missing) on
            CUDA; False (default) evaluates in float32, as every reference's test script does.
    """

    mode: str
    shots: int
    trials: int
    direction: str
    protocol: str
    perm_file: str
    feature: str
    flip: bool
    batch_size: int
    amp: bool


@dataclass(frozen=True)
class PretrainConfig:
    """The demo's ImageNet stand-in (:mod:`common.demo.standin`), used where a weights key is
    ``"demo-standin"``.

    Attributes:
        identities: procedural identities to classify (disjoint from the demo's).
        images_per_identity: training images of each (visible, random world-1 camera).
        held_out_per_identity: further images of each, for the recorded top-1 accuracy.
        epochs: passes over the training images (cosine learning-rate decay to 0).
        batch_size: images per step.
        vgg_scale: input size of the VGG16 stand-in relative to ``data.height/width`` (0.5:
            its layers 5-30 see maps of the re-ID stem's size, at a quarter of the cost).
        seed: the identities' and the training's seed.
    """

    identities: int
    images_per_identity: int
    held_out_per_identity: int
    epochs: int
    batch_size: int
    vgg_scale: float
    seed: int


@dataclass(frozen=True)
class Config:
    """A whole run's settings."""

    profile: str
    data: DataConfig
    gan: GanConfig
    fusion: FusionConfig
    eval: EvalConfig
    pretrain: PretrainConfig


# --------------------------------------------------------------------------- loading


#: What config loading needs to know of the methods: name -> an object with ``recipe_type``
#: (the method's :class:`Recipe` subclass), i.e. :data:`stage2_fusion.methods.METHODS`. It is
#: passed in because this module sits below both stages and imports neither.
MethodCatalogue = Mapping[str, Any]


def _profile_text(name: str) -> str:
    if name not in PROFILES:
        raise UserError(f"unknown profile '{name}'; choose one of: {', '.join(PROFILES)}")
    return resources.files("common").joinpath("profiles", f"{name}.toml").read_text()


def profile_table(name: str) -> dict[str, Any]:
    """A shipped profile's tables. A profile may start from another with ``extends = "<name>"``
    and list only what it changes (``demo-full`` is ``demo`` with its schedules lengthened).

    Raises:
        UserError: unknown profile.
    """
    table = tomllib.loads(_profile_text(name))
    base = table.pop("extends", None)
    return merge_tables(profile_table(base), table) if base is not None else table


def _read_toml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML ({exc}); fix the file") from None


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, tables merged key by key (a nested dict is a TOML table)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def _convert(tp: Any, value: Any, where: str, methods: MethodCatalogue) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a table; see the shipped profiles for its form")
        return _build(tp, value, where, methods)
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a table; see the shipped profiles for its form")
        if value_tp is Recipe:
            return {k: _recipe(k, v, f"{where}.{k}", methods) for k, v in value.items()}
        return {k: _convert(value_tp, v, f"{where}.{k}", methods) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{where}' must be a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, where, methods) for v in value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is str or tp is Weights:
        if not isinstance(value, str):
            raise UserError(f"config key '{where}' must be a string, got {value!r}")
        return tp(value)
    raise TypeError(f"unsupported config type {tp} at {where}")


def _recipe(method: str, table: Any, where: str, methods: MethodCatalogue) -> Recipe:
    """``[fusion.recipes.<method>]`` as the method's own recipe type (from the catalogue)."""
    if method not in methods:
        raise UserError(f"{where}: unknown method; choose among: {', '.join(methods)}")
    recipe_type = methods[method].recipe_type
    if isinstance(table, dict):
        own = {f.name for f in dataclasses.fields(recipe_type)}
        others = {f.name for spec in methods.values() for f in dataclasses.fields(spec.recipe_type)}
        for key in table:
            if key not in own and key in others:  # another method's key: a setting that would be silently ignored
                raise UserError(f"{where}.{key}: method {method} does not use {key}; remove it (the keys {method} reads: "
                                f"{recipe_type.__name__} in stage2_fusion/methods/)")
    return _convert(recipe_type, table, where, methods)


def _build(cls: type, table: dict[str, Any], where: str, methods: MethodCatalogue) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    prefix = f"{where}." if where else ""
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys there: {', '.join(sorted(names))}"
        )
    missing = [name for name in names if name not in table]
    if missing:  # the profiles are the only source of values: a key no table gives has no value
        raise UserError(f"config key '{prefix}{missing[0]}' has no value; a profile gives every key, so a table of a --config file "
                        "for a new method (or section) must list them all (see common/profiles/paper.toml)")
    kwargs = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(hints[name], value, key, methods)
    return cls(**kwargs)


def check_range(ok: bool, key: str, value: Any, rule: str) -> None:
    """Refuse a number out of range, one line naming the key, its value and the rule.

    Raises:
        UserError: when ``ok`` is false.
    """
    if not ok:
        raise UserError(f"config key '{key}' = {value!r} is out of range: it must be {rule}")


def _validate_ranges(cfg: Config) -> None:
    """Numbers a run cannot work with (negative learning rate, zero epochs, ...): one line each."""
    d, g, f, e = cfg.data, cfg.gan, cfg.fusion, cfg.eval
    check_range(d.height > 0 and d.width > 0, "data.height/width", (d.height, d.width), "positive")
    check_range(d.decode_threads >= 1, "data.decode_threads", d.decode_threads, ">= 1")
    for key, value, ok, rule in (
        ("gan.epochs", g.epochs, g.epochs >= 1, ">= 1"),
        ("gan.decay_start_epoch", g.decay_start_epoch, 0 <= g.decay_start_epoch <= g.epochs, "between 0 and gan.epochs"),
        ("gan.steps_per_epoch", g.steps_per_epoch, g.steps_per_epoch >= 0, ">= 0 (0: one pass over the larger modality)"),
        ("gan.batch_size", g.batch_size, g.batch_size >= 1, ">= 1"),
        ("gan.lr", g.lr, g.lr > 0, "> 0"),
        ("gan.beta1", g.beta1, 0 <= g.beta1 < 1, "in [0, 1)"),
        ("gan.beta2", g.beta2, 0 <= g.beta2 < 1, "in [0, 1)"),
        ("gan.lambda_cycle", g.lambda_cycle, g.lambda_cycle >= 0, ">= 0"),
        ("gan.lambda_identity", g.lambda_identity, g.lambda_identity >= 0, ">= 0"),
        ("gan.pool_size", g.pool_size, g.pool_size >= 0, ">= 0"),
        ("gan.max_nonfinite_steps", g.max_nonfinite_steps, g.max_nonfinite_steps >= 0, ">= 0"),
        ("gan.crop_scale", g.crop_scale, 1.0 <= g.crop_scale <= 2.0, "in [1, 2] (1: no resize-and-crop)"),
        ("gan.select_images", g.select_images, g.select_images >= 8, ">= 8 (the two-sample test needs images)"),
        ("gan.monitor_every", g.monitor_every, g.monitor_every >= 0, ">= 0 (0: no curve)"),
        ("gan.reid_id_weight", g.reid_id_weight, g.reid_id_weight >= 0, ">= 0"),
        ("gan.reid_triplet_weight", g.reid_triplet_weight, g.reid_triplet_weight >= 0, ">= 0"),
        ("gan.reid_margin", g.reid_margin, g.reid_margin >= 0, ">= 0"),
        ("gan.reid_pretrain_steps", g.reid_pretrain_steps, g.reid_pretrain_steps >= 0, ">= 0"),
        ("gan.reid_ids_per_batch", g.reid_ids_per_batch, not (g.reid_id_weight or g.reid_triplet_weight) or (
            2 <= g.reid_ids_per_batch <= g.batch_size and g.batch_size % g.reid_ids_per_batch == 0),
         "between 2 and gan.batch_size, dividing gan.batch_size, when the re-ID losses are on (K = batch_size / P images per identity)"),
        ("fusion.max_nonfinite_steps", f.max_nonfinite_steps, f.max_nonfinite_steps >= 0, ">= 0"),
        ("eval.trials", e.trials, e.trials >= 1, ">= 1"),
        ("eval.batch_size", e.batch_size, e.batch_size >= 1, ">= 1"),
    ):
        check_range(ok, key, value, rule)


def _validate(cfg: Config, methods: MethodCatalogue) -> Config:
    _validate_ranges(cfg)
    if cfg.fusion.method not in methods:
        raise UserError(f"fusion.method '{cfg.fusion.method}' is unknown; choose one of: {', '.join(methods)}")
    for method, recipe in cfg.fusion.recipes.items():
        recipe.check(f"fusion.recipes.{method}")
    if cfg.data.demo_physics not in ("nir", "thermal"):
        raise UserError(f"data.demo_physics '{cfg.data.demo_physics}' is unknown; use 'nir' or 'thermal'")
    if cfg.gan.input not in ("gray", "rgb"):
        raise UserError(f"gan.input '{cfg.gan.input}' is unknown; use 'gray' (TSME: the generator sees the visible image's gray copy) or 'rgb'")
    if cfg.gan.out_channels not in (1, 3):
        raise UserError(f"gan.out_channels {cfg.gan.out_channels}: use 1 (a gray output) or 3 (TSME's layout)")
    if cfg.fusion.amp_dtype not in AMP_DTYPES:
        raise UserError(f"fusion.amp_dtype '{cfg.fusion.amp_dtype}' is unknown; use {' or '.join(AMP_DTYPES)}")
    if cfg.gan.select_by not in ("two-sample", "psnr", "last"):
        raise UserError(f"gan.select_by '{cfg.gan.select_by}' is unknown; use two-sample, psnr or last")
    if cfg.eval.mode not in ("all", "indoor"):
        raise UserError(f"eval.mode '{cfg.eval.mode}' is unknown; use 'all' or 'indoor'")
    if cfg.eval.shots not in (1, 10):
        raise UserError(f"eval.shots {cfg.eval.shots} is not a SYSU-MM01 protocol; use 1 or 10")
    if cfg.eval.direction not in ("v2i", "i2v"):
        raise UserError(f"eval.direction '{cfg.eval.direction}' is unknown; use 'v2i' or 'i2v'")
    if cfg.eval.protocol not in ("random", "official"):
        raise UserError(f"eval.protocol '{cfg.eval.protocol}' is unknown; use 'random' or 'official'")
    if cfg.eval.feature not in ("pre", "post"):
        raise UserError(f"eval.feature '{cfg.eval.feature}' is unknown; use 'pre' or 'post'")
    if cfg.data.height % 16 or cfg.data.width % 16:
        raise UserError(
            f"data.height x data.width = {cfg.data.height} x {cfg.data.width}: both must be multiples of 16 "
            "(the generator and ResNet downsample by 16)"
        )
    if len(cfg.fusion.backbone.layers) != 4 or len(cfg.fusion.backbone.nonlocal_blocks) != 4:
        raise UserError("fusion.backbone.layers and nonlocal_blocks need 4 entries, one per ResNet stage")
    for n_nl, n_blocks in zip(cfg.fusion.backbone.nonlocal_blocks, cfg.fusion.backbone.layers):
        if not 0 <= n_nl <= n_blocks:
            raise UserError(
                f"fusion.backbone.nonlocal_blocks {cfg.fusion.backbone.nonlocal_blocks} asks for more non-local "
                f"blocks than a stage of {cfg.fusion.backbone.layers} has"
            )
    return cfg


def config_from_dict(table: dict[str, Any], *, methods: MethodCatalogue) -> Config:
    """Build and validate a :class:`Config` from a nested dict (a parsed TOML document), each
    recipe typed by its method's ``recipe_type`` from ``methods``.

    Raises:
        UserError: on an unknown or missing key, a value of the wrong type or an invalid setting.
    """
    return _validate(_build(Config, table, "", methods), methods)


def load_config(
    profile: str = "demo",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    methods: MethodCatalogue,
) -> Config:
    """Resolve a run's configuration: profile, then ``--config`` file, then flag overrides.

    Args:
        profile: shipped profile name, "demo" or "paper".
        config_file: optional TOML file whose tables override the profile (a full resolved
            ``config.toml`` from a run directory works too; its ``profile`` key then wins).
        overrides: nested dict of final overrides (from command-line flags).
        methods: the method registry (:data:`stage2_fusion.methods.METHODS`, which
            :func:`stage2_fusion.methods.load_config` passes).

    Returns:
        The frozen :class:`Config`.

    Raises:
        UserError: unknown profile, missing or invalid file, unknown key, a recipe key its
            method does not read, wrong type.
    """
    return config_from_dict(resolve_table(profile, config_file, overrides), methods=methods)


def resolve_table(profile: str = "demo", config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merged TOML tables of a run before they are typed and checked: profile, then
    ``--config`` file, then overrides (what :func:`load_config` builds its :class:`Config` from;
    a command that must read a key before it knows all its overrides, such as the default
    method, reads it here and builds the config once).

    Raises:
        UserError: unknown profile, missing or invalid file.
    """
    table = profile_table(profile)
    table["profile"] = profile
    if config_file is not None:
        table = merge_tables(table, _read_toml_file(Path(config_file)))
    if overrides:
        table = merge_tables(table, overrides)
    return table


def require_pretrained_choice(cfg: Config, *, gan: bool, fusion: bool = True, vgg16: bool = False) -> None:
    """Refuse to train a stage whose ImageNet weights are still ``"required"`` (paper profile).

    Both TSME (its DSGAN encoder and re-ID streams) and AGW start from ImageNet ResNet-50
    weights, and MSO's PEF loss from ImageNet VGG16; training the paper profile from scratch
    by accident would cost a GPU day and give far lower numbers, so the choice must be
    explicit: ``--pretrained PATH`` or ``--pretrained none``, ``--vgg16 PATH`` or
    ``--vgg16 none`` (``vgg16``: the run's method uses PEF, :func:`uses_pef`).

    Raises:
        UserError: naming the key and both ways out.
    """
    from common.nets.resnet import pretrained_required_message
    from common.nets.vgg import VGG16_URL

    if gan and cfg.gan.pretrained.kind is WeightsKind.REQUIRED:
        raise UserError(pretrained_required_message("gan.pretrained"))
    if fusion and cfg.fusion.backbone.pretrained.kind is WeightsKind.REQUIRED:
        raise UserError(pretrained_required_message("fusion.backbone.pretrained"))
    if vgg16 and cfg.fusion.vgg16.kind is WeightsKind.REQUIRED:
        raise UserError(f"fusion.vgg16 is '{cfg.fusion.vgg16}': MSO's PEF loss compares features of an ImageNet VGG16; pass "
                        f"--vgg16 PATH (torchvision's vgg16-397923af.pth, from {VGG16_URL}) or --vgg16 none to use a random "
                        "VGG16 on purpose")


def for_method(cfg: Config, method: str) -> Config:
    """``cfg`` with ``data.height/width`` set to the method's recipe size when it has one
    (MSCMNet trains at 384 x 192 in the paper profile, the others at ``data``'s size).

    Raises:
        UserError: the config has no recipe for ``method``.
    """
    recipe = cfg.fusion.recipe(method)
    if not recipe.height:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=recipe.height, width=recipe.width))


def test_feature(cfg: Config, method: str) -> str:
    """The BNNeck side a method is tested with: its recipe's ``test_feature`` or ``eval.feature``."""
    recipe = cfg.fusion.recipes.get(method)
    return (recipe.test_feature if recipe is not None else "") or cfg.eval.feature


def for_inference(cfg: Config) -> Config:
    """``cfg`` with no ImageNet weights to load: for rebuilding a trained model whose
    weights come from its checkpoint (the training machine's weights file need not exist here)."""
    backbone = dataclasses.replace(cfg.fusion.backbone, pretrained=NONE)
    return dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, pretrained=NONE),
                               fusion=dataclasses.replace(cfg.fusion, backbone=backbone, vgg16=NONE))


# --------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _toml_tables(table: dict[str, Any], prefix: str, lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{prefix}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        _toml_tables(value, f"{prefix}.{key}" if prefix else key, lines)


def dump_config(cfg: Config) -> str:
    """The resolved configuration as TOML text; :func:`config_from_dict` of its parse is
    ``cfg``, and :func:`load_config` accepts it as ``--config`` (each recipe lists the keys
    its method reads)."""
    lines = ["# Resolved configuration of this run, written by the pipeline; load it with --config."]
    _toml_tables(dataclasses.asdict(cfg), "", lines)
    return "\n".join(lines) + "\n"


def config_section_dict(section: Any) -> dict[str, Any]:
    """A config section as a plain dict of built-in types (for hashing stage inputs and for
    checkpoint metadata, which ``torch.load(weights_only=True)`` reads: a :class:`Weights` is
    stored as its ``str``)."""
    return _plain(dataclasses.asdict(section))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, str):
        return str(value)
    return value


def digest(obj: Any) -> str:
    """Short SHA-256 (16 hex) of a JSON-able object: the identity of a stage's inputs.

    Used to decide whether a stage's existing output is current (same config section,
    same data fingerprint) and may be skipped, or must be redone.
    """
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
