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
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import UserError

PROFILES = ("demo", "paper")
METHODS = ("agw", "tsme", "mso", "mscmnet", "glmn")
EDGE_METHODS = ("agw", "mso", "tsme")
AMP_DTYPES = ("bf16", "fp16")

# Recipe keys every method reads (sampler, optimiser, schedule, augmentation, size, test).
_COMMON_RECIPE_KEYS = frozenset({
    "ids_per_batch", "images_per_id", "sample_with_replacement", "epochs", "steps_per_epoch", "optimizer", "lr",
    "backbone_lr_mult", "momentum", "weight_decay", "nesterov", "warmup_epochs", "warmup_method", "warmup_factor",
    "milestones", "gamma", "pad", "flip_p", "erasing_p", "id_weight", "height", "width", "eval_every", "test_feature",
})
_EDGE_KEYS = frozenset({"edge", "edge_mode", "edge_loss", "pef_weight", "pef_stages"})
#: The recipe keys each method reads; any other key in its table is refused (load_config).
#: agw/mso/tsme use the common augmentation (channel_aug, gray_mix_p); mscmnet and glmn
#: make their own views and read neither.
RECIPE_KEYS: dict[str, frozenset[str]] = {
    "agw": _COMMON_RECIPE_KEYS | _EDGE_KEYS | {"channel_aug", "gray_mix_p", "wrt_weight", "hc_weight", "cmcc_weight"},
    "mso": _COMMON_RECIPE_KEYS | _EDGE_KEYS | {"channel_aug", "gray_mix_p", "wrt_weight", "hc_weight", "cmcc_weight"},
    "tsme": _COMMON_RECIPE_KEYS | _EDGE_KEYS | {"channel_aug", "gray_mix_p", "wrt_weight", "hc_weight"},
    "mscmnet": _COMMON_RECIPE_KEYS | {"qct_weight", "triplet_margin"},
    "glmn": _COMMON_RECIPE_KEYS | {"wrt_weight", "local_weight", "triplet_margin", "adp_square"},
}


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

    height: int = 288
    width: int = 144
    demo_seed: int = 0
    demo_train_ids: int = 32
    demo_val_ids: int = 8
    demo_test_ids: int = 32
    demo_physics: str = "nir"
    decode_threads: int = 4


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
            :mod:`common.standin`), "none" (from scratch) or "required" (the paper profile:
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

    encoder_layers: tuple[int, ...] = (3, 4, 6, 3)
    base_width: int = 64
    disc_widths: tuple[int, ...] = (128, 128, 256, 512)
    pretrained: str = "none"
    epochs: int = 200
    decay_start_epoch: int = 100
    steps_per_epoch: int = 0
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    pool_size: int = 50
    image_every: int = 500
    seed: int = 0
    amp: bool = True
    max_nonfinite_steps: int = 20
    out_channels: int = 1
    crop_scale: float = 1.0
    select_by: str = "two-sample"
    select_images: int = 200
    input: str = "gray"
    monitor_every: int = 0
    reid_id_weight: float = 0.0
    reid_triplet_weight: float = 0.0
    reid_margin: float = 0.3
    reid_pretrain_steps: int = 400
    reid_ids_per_batch: int = 4


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
            :mod:`common.standin`), "none" (from scratch) or "required" (the paper profile:
            training refuses to start until a path or "none" is given).
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    base_width: int = 64
    last_stride: int = 1
    nonlocal_blocks: tuple[int, ...] = (0, 2, 3, 0)
    nonlocal_inter_channels: int = 1
    pretrained: str = "none"


@dataclass(frozen=True)
class RecipeConfig:
    """One method's training recipe (sampler, optimiser, schedule, augmentation, loss).

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
        height, width: this method's input size (0 = ``data.height`` x ``data.width``;
            MSCMNet trains at 384 x 192).
        milestones, gamma: step decay epochs and factor.
        pad, flip_p, erasing_p, channel_aug, gray_mix_p: augmentation (zero-pad + random
            crop, horizontal flip probability, random erasing probability, CAJ channel
            exchange on/off, probability of the random-projection grayscale of visible
            images, :func:`common.augment.random_gray_mix`).
        id_weight, wrt_weight, hc_weight: loss weights (identity cross-entropy,
            weighted-regularisation triplet (GLMN: its ADP triplet), hetero-centre).
        edge: MSO's edge operator at the stems, "none", "laplace", "sobel" or "prewitt"
            (agw, mso, tsme's real stream).
        edge_mode: "mso" (its signed kernels) or "magnitude" (kornia's edge magnitude).
        edge_loss: "pef" (MSO's perceptual edge loss through VGG16) or "fuse" (ours: the
            embedded edge map added to the stem output).
        pef_weight, cmcc_weight: MSO's PEF and cross-modality contrastive-centre weights.
        pef_stages: VGG16 stages PEF chains (MSO: 4; fewer for small inputs).
        qct_weight: MSCMNet's quadruple centre triplet loss weight.
        local_weight: GLMN's aligned local triplet loss weight.
        triplet_margin: margin of MSCMNet's QCT (0.7) or GLMN's local triplet (0.3).
        adp_square: GLMN's ADP triplet on squared distance differences (its README runs
            ``--square 1``: true); false = the non-squared form (an option of ours).
        eval_every: evaluate on trial 0 every n epochs (0 = only at the end).
        test_feature: "pre" or "post" BNNeck feature this method is tested with; "" =
            ``eval.feature`` (MSO reports its pooled, pre-BN feature).
    """

    ids_per_batch: int = 8
    images_per_id: int = 4
    sample_with_replacement: bool = True
    epochs: int = 80
    steps_per_epoch: int = 0
    optimizer: str = "sgd"
    lr: float = 0.1
    backbone_lr_mult: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    warmup_epochs: int = 10
    warmup_method: str = "agw"
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = (20, 50)
    gamma: float = 0.1
    pad: int = 10
    flip_p: float = 0.5
    erasing_p: float = 0.0
    channel_aug: bool = False
    gray_mix_p: float = 0.0
    id_weight: float = 1.0
    wrt_weight: float = 1.0
    hc_weight: float = 0.0
    edge: str = "none"
    edge_mode: str = "mso"
    edge_loss: str = "pef"
    pef_weight: float = 1.0
    cmcc_weight: float = 0.0
    pef_stages: int = 4
    qct_weight: float = 1.0
    local_weight: float = 0.5
    triplet_margin: float = 0.3
    adp_square: bool = True
    height: int = 0
    width: int = 0
    eval_every: int = 2
    test_feature: str = ""


@dataclass(frozen=True)
class FusionConfig:
    """Stage 2, the fusion re-ID network.

    Attributes:
        method: default ``--method`` ("agw" or "tsme").
        backbone: see :class:`BackboneConfig`.
        embed_dim: width of each TSME stripe embedding (512).
        num_stripes: horizontal stripes of the fused map (TSME: 6).
        num_aux_stripes: stripes of each IAI head group (TSME: 2).
        tsme_streams: TSME's backbones: "paper" (its code: four independent ResNets,
            visible/infrared x real/generated, no non-local blocks) or "agw" (two AGW
            backbones, real and generated, each with modality-specific stems, a shared body
            and non-local blocks).
        tsme_gate: TSME's parameter-free gate on the real stream (False: ablation).
        tsme_iai: TSME's IAI heads on the real and generated maps (False: ablation, the 6
            fused heads only).
        vgg16: VGG16 weights for MSO's PEF loss: a local path of torchvision's ImageNet
            VGG16 (``vgg16-397923af.pth``), "demo-standin" (the demo's stand-in,
            :mod:`common.standin`), "none" or "" (random initialisation: not MSO's setting;
            said at training start) or "required" (the paper profile: a run whose method uses
            PEF refuses to start until a path or "none" is given).
        seed: random seed.
        amp: mixed precision on CUDA (ignored on CPU).
        amp_dtype: "bf16" (bfloat16 autocast without a scaler; fp16 + GradScaler where the GPU
            has no bf16) or "fp16" (float16 autocast with a GradScaler, as MSCMNet's train.py
            trains; Hua-XC/MSCMNet:train.py ``amp.autocast`` + ``amp.GradScaler``).
        max_nonfinite_steps: steps with a NaN/inf loss skipped before the run stops
            (:class:`common.guard.NonFiniteGuard`).
        recipes: per-method recipe, keyed by method name.
    """

    method: str = "tsme"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embed_dim: int = 512
    num_stripes: int = 6
    num_aux_stripes: int = 2
    tsme_streams: str = "agw"
    tsme_gate: bool = True
    tsme_iai: bool = True
    vgg16: str = ""
    seed: int = 0
    amp: bool = True
    amp_dtype: str = "bf16"
    max_nonfinite_steps: int = 20
    recipes: dict[str, RecipeConfig] = field(default_factory=dict)

    def recipe(self, method: str) -> RecipeConfig:
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

    mode: str = "all"
    shots: int = 1
    trials: int = 10
    direction: str = "v2i"
    protocol: str = "random"
    perm_file: str = ""
    feature: str = "post"
    flip: bool = False
    batch_size: int = 128
    amp: bool = False


@dataclass(frozen=True)
class PretrainConfig:
    """The demo's ImageNet stand-in (:mod:`common.standin`), used where a weights key is
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

    identities: int = 300
    images_per_identity: int = 12
    held_out_per_identity: int = 2
    epochs: int = 8
    batch_size: int = 64
    vgg_scale: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class Config:
    """A whole run's settings."""

    profile: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# --------------------------------------------------------------------------- loading


_RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(RecipeConfig))
assert all(keys <= _RECIPE_FIELDS for keys in RECIPE_KEYS.values())


def _profile_text(name: str) -> str:
    if name not in PROFILES:
        raise UserError(f"unknown profile '{name}'; choose one of: {', '.join(PROFILES)}")
    return resources.files("common").joinpath("profiles", f"{name}.toml").read_text()


def _read_toml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML ({exc}); fix the file") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a table; see the shipped profiles for its form")
        return _build(tp, value, where)
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a table; see the shipped profiles for its form")
        return {k: _convert(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{where}' must be a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, where) for v in value)
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
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{where}' must be a string, got {value!r}")
        return value
    if isinstance(tp, types.UnionType):  # pragma: no cover - no unions in the config today
        raise TypeError(f"unsupported config type {tp} at {where}")
    raise TypeError(f"unsupported config type {tp} at {where}")


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys there: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(hints[name], value, key)
    return cls(**kwargs)


def _range(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise UserError(f"config key '{key}' = {value!r} is out of range: it must be {rule}")


def _validate_ranges(cfg: Config) -> None:
    """Numbers a run cannot work with (negative learning rate, zero epochs, ...): one line each."""
    d, g, f, e = cfg.data, cfg.gan, cfg.fusion, cfg.eval
    _range(d.height > 0 and d.width > 0, "data.height/width", (d.height, d.width), "positive")
    _range(d.decode_threads >= 1, "data.decode_threads", d.decode_threads, ">= 1")
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
        ("fusion.embed_dim", f.embed_dim, f.embed_dim >= 1, ">= 1"),
        ("fusion.num_stripes", f.num_stripes, f.num_stripes >= 1, ">= 1"),
        ("fusion.num_aux_stripes", f.num_aux_stripes, f.num_aux_stripes >= 1, ">= 1"),
        ("fusion.max_nonfinite_steps", f.max_nonfinite_steps, f.max_nonfinite_steps >= 0, ">= 0"),
        ("eval.trials", e.trials, e.trials >= 1, ">= 1"),
        ("eval.batch_size", e.batch_size, e.batch_size >= 1, ">= 1"),
    ):
        _range(ok, key, value, rule)
    for method, r in f.recipes.items():
        k = f"fusion.recipes.{method}"
        for key, value, ok, rule in (
            ("ids_per_batch", r.ids_per_batch, r.ids_per_batch >= 2, ">= 2 (the triplet losses need another identity)"),
            ("images_per_id", r.images_per_id, r.images_per_id >= 1, ">= 1"),
            ("epochs", r.epochs, r.epochs >= 1, ">= 1"),
            ("steps_per_epoch", r.steps_per_epoch, r.steps_per_epoch >= 0, ">= 0 (0: AGW's int(N / (P * K)) + 1)"),
            ("lr", r.lr, r.lr > 0, "> 0"),
            ("backbone_lr_mult", r.backbone_lr_mult, r.backbone_lr_mult >= 0, ">= 0"),
            ("momentum", r.momentum, 0 <= r.momentum < 1, "in [0, 1)"),
            ("weight_decay", r.weight_decay, r.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", r.warmup_epochs, r.warmup_epochs >= 0, ">= 0"),
            ("warmup_factor", r.warmup_factor, 0 < r.warmup_factor <= 1, "in (0, 1]"),
            ("milestones", r.milestones, all(m >= 0 for m in r.milestones), "epochs >= 0"),
            ("gamma", r.gamma, 0 < r.gamma <= 1, "in (0, 1]"),
            ("pad", r.pad, r.pad >= 0, ">= 0"),
            ("flip_p", r.flip_p, 0 <= r.flip_p <= 1, "a probability in [0, 1]"),
            ("erasing_p", r.erasing_p, 0 <= r.erasing_p <= 1, "a probability in [0, 1]"),
            ("gray_mix_p", r.gray_mix_p, 0 <= r.gray_mix_p <= 1, "a probability in [0, 1]"),
            ("id_weight", r.id_weight, r.id_weight >= 0, ">= 0"),
            ("wrt_weight", r.wrt_weight, r.wrt_weight >= 0, ">= 0"),
            ("hc_weight", r.hc_weight, r.hc_weight >= 0, ">= 0"),
            ("qct_weight", r.qct_weight, r.qct_weight >= 0, ">= 0"),
            ("pef_weight", r.pef_weight, r.pef_weight >= 0, ">= 0"),
            ("cmcc_weight", r.cmcc_weight, r.cmcc_weight >= 0, ">= 0"),
            ("local_weight", r.local_weight, r.local_weight >= 0, ">= 0"),
            ("triplet_margin", r.triplet_margin, r.triplet_margin >= 0, ">= 0"),
            ("eval_every", r.eval_every, r.eval_every >= 0, ">= 0 (0: only at the end)"),
        ):
            _range(ok, f"{k}.{key}", value, rule)


def _validate(cfg: Config) -> Config:
    _validate_ranges(cfg)
    if cfg.fusion.method not in METHODS:
        raise UserError(f"fusion.method '{cfg.fusion.method}' is unknown; choose one of: {', '.join(METHODS)}")
    for method, recipe in cfg.fusion.recipes.items():
        if method not in METHODS:
            raise UserError(f"fusion.recipes.{method}: unknown method; choose among: {', '.join(METHODS)}")
        if recipe.optimizer not in ("sgd", "adam"):
            raise UserError(f"fusion.recipes.{method}.optimizer '{recipe.optimizer}' is unknown; use 'sgd' or 'adam'")
        if recipe.edge not in ("none", "laplace", "sobel", "prewitt"):
            raise UserError(f"fusion.recipes.{method}.edge '{recipe.edge}' is unknown; use none, laplace, sobel or prewitt")
        if recipe.edge_mode not in ("mso", "magnitude") or recipe.edge_loss not in ("pef", "fuse"):
            raise UserError(f"fusion.recipes.{method}: edge_mode '{recipe.edge_mode}' / edge_loss '{recipe.edge_loss}' unknown; "
                            "use mso | magnitude and pef | fuse")
        if recipe.edge != "none" and method not in EDGE_METHODS:
            raise UserError(f"fusion.recipes.{method}.edge: edge features are offered for {', '.join(EDGE_METHODS)}, not {method}; "
                            "set edge = 'none'")
        if method == "mso" and recipe.edge == "none":
            raise UserError("fusion.recipes.mso.edge is 'none': MSO is AGW with edge features; choose laplace, sobel or prewitt")
        if recipe.test_feature not in ("", "pre", "post"):
            raise UserError(f"fusion.recipes.{method}.test_feature '{recipe.test_feature}' is unknown; use '', 'pre' or 'post'")
        if not 1 <= recipe.pef_stages <= 4:
            raise UserError(f"fusion.recipes.{method}.pef_stages {recipe.pef_stages}: MSO chains 1..4 VGG16 stages")
        if recipe.warmup_method not in ("agw", "linear"):
            raise UserError(f"fusion.recipes.{method}.warmup_method '{recipe.warmup_method}' is unknown; use 'agw' or 'linear'")
        if (recipe.height or recipe.width) and (recipe.height % 16 or recipe.width % 16 or not (recipe.height and recipe.width)):
            raise UserError(f"fusion.recipes.{method}: height x width = {recipe.height} x {recipe.width}; give both, multiples of 16 "
                            "(or 0 x 0 for data.height x data.width)")
    if cfg.data.demo_physics not in ("nir", "thermal"):
        raise UserError(f"data.demo_physics '{cfg.data.demo_physics}' is unknown; use 'nir' or 'thermal'")
    if cfg.gan.input not in ("gray", "rgb"):
        raise UserError(f"gan.input '{cfg.gan.input}' is unknown; use 'gray' (TSME: the generator sees the visible image's gray copy) or 'rgb'")
    if cfg.gan.out_channels not in (1, 3):
        raise UserError(f"gan.out_channels {cfg.gan.out_channels}: use 1 (gray output, default) or 3 (TSME's layout)")
    if cfg.fusion.amp_dtype not in AMP_DTYPES:
        raise UserError(f"fusion.amp_dtype '{cfg.fusion.amp_dtype}' is unknown; use {' or '.join(AMP_DTYPES)}")
    if cfg.gan.select_by not in ("two-sample", "psnr", "last"):
        raise UserError(f"gan.select_by '{cfg.gan.select_by}' is unknown; use two-sample, psnr or last")
    if cfg.fusion.tsme_streams not in ("paper", "agw"):
        raise UserError(f"fusion.tsme_streams '{cfg.fusion.tsme_streams}' is unknown; use 'paper' (TSME's four ResNets) or 'agw'")
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


def config_from_dict(table: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (a parsed TOML document).

    Raises:
        UserError: on an unknown key, a value of the wrong type or an invalid setting.
    """
    return _validate(_build(Config, table, ""))


def load_config(
    profile: str = "demo",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Resolve a run's configuration: profile, then ``--config`` file, then flag overrides.

    Args:
        profile: shipped profile name, "demo" or "paper".
        config_file: optional TOML file whose tables override the profile (a full resolved
            ``config.toml`` from a run directory works too; its ``profile`` key then wins).
        overrides: nested dict of final overrides (from command-line flags).

    Returns:
        The frozen :class:`Config`.

    Raises:
        UserError: unknown profile, missing or invalid file, unknown key, wrong type.
    """
    table = tomllib.loads(_profile_text(profile))
    table["profile"] = profile
    if config_file is not None:
        table = _merge(table, _read_toml_file(Path(config_file)))
    if overrides:
        table = _merge(table, overrides)
    refuse_unused_recipe_keys(table)
    return config_from_dict(table)


def refuse_unused_recipe_keys(table: dict[str, Any]) -> None:
    """Refuse a recipe key its method does not read (one line naming key and method):
    a setting that would be silently ignored (``gray_mix_p`` for MSCMNet, which makes its own
    views) is a mistake to report, not to run.

    Raises:
        UserError: naming the first such key.
    """
    recipes = table.get("fusion", {}).get("recipes", {}) if isinstance(table.get("fusion"), dict) else {}
    if not isinstance(recipes, dict):
        return
    for method, recipe in recipes.items():
        if method in RECIPE_KEYS and isinstance(recipe, dict):
            for key in recipe:
                if key not in RECIPE_KEYS[method] and key in _RECIPE_FIELDS:
                    raise UserError(f"fusion.recipes.{method}.{key}: method {method} does not use {key}; remove it "
                                    f"(keys {method} reads: see RECIPE_KEYS in common/config.py)")


def uses_pef(cfg: Config, method: str) -> bool:
    """Whether ``method``'s recipe trains with MSO's PEF loss (an edge operator with ``edge_loss = "pef"``),
    which compares VGG16 features (``fusion.vgg16``)."""
    recipe = cfg.fusion.recipes.get(method)
    return recipe is not None and recipe.edge != "none" and recipe.edge_loss == "pef"


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
    from common.resnet import PRETRAINED_REQUIRED, pretrained_required_message
    from common.vgg import VGG16_URL

    if gan and cfg.gan.pretrained == PRETRAINED_REQUIRED:
        raise UserError(pretrained_required_message("gan.pretrained"))
    if fusion and cfg.fusion.backbone.pretrained == PRETRAINED_REQUIRED:
        raise UserError(pretrained_required_message("fusion.backbone.pretrained"))
    if vgg16 and cfg.fusion.vgg16 == PRETRAINED_REQUIRED:
        raise UserError(f"fusion.vgg16 is '{PRETRAINED_REQUIRED}': MSO's PEF loss compares features of an ImageNet VGG16; pass "
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


def edge_summary(cfg: Config, method: str) -> dict[str, str]:
    """What a run's results record of its edge features: operator, mode, loss."""
    recipe = cfg.fusion.recipes.get(method)
    if recipe is None or recipe.edge == "none":
        return {"operator": "none"}
    vgg16 = cfg.fusion.vgg16 if cfg.fusion.vgg16 not in ("", "none") else "random initialisation"
    return {"operator": recipe.edge, "mode": recipe.edge_mode, "loss": recipe.edge_loss,
            **({"vgg16": vgg16} if recipe.edge_loss == "pef" else {})}


def test_feature(cfg: Config, method: str) -> str:
    """The BNNeck side a method is tested with: its recipe's ``test_feature`` or ``eval.feature``."""
    recipe = cfg.fusion.recipes.get(method)
    return (recipe.test_feature if recipe is not None else "") or cfg.eval.feature


def for_inference(cfg: Config) -> Config:
    """``cfg`` with no ImageNet weights to load: for rebuilding a trained model whose
    weights come from its checkpoint (the training machine's weights file need not exist here)."""
    backbone = dataclasses.replace(cfg.fusion.backbone, pretrained="none")
    return dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, pretrained="none"),
                               fusion=dataclasses.replace(cfg.fusion, backbone=backbone, vgg16=""))


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
    ``cfg``, and :func:`load_config` accepts it as ``--config`` (each recipe lists only the
    keys its method reads; the others keep their defaults)."""
    lines = ["# Resolved configuration of this run, written by the pipeline; load it with --config."]
    table = dataclasses.asdict(cfg)
    recipes = table["fusion"]["recipes"]
    for method in recipes:
        if method in RECIPE_KEYS:
            recipes[method] = {k: v for k, v in recipes[method].items() if k in RECIPE_KEYS[method]}
    _toml_tables(table, "", lines)
    return "\n".join(lines) + "\n"


def config_section_dict(section: Any) -> dict[str, Any]:
    """A config section as a plain dict (for hashing stage inputs and checkpoint metadata)."""
    return dataclasses.asdict(section)


def digest(obj: Any) -> str:
    """Short SHA-256 (16 hex) of a JSON-able object: the identity of a stage's inputs.

    Used to decide whether a stage's existing output is current (same config section,
    same data fingerprint) and may be skipped, or must be redone.
    """
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
