"""The demo's ImageNet stand-in: pretrained weights made as ImageNet's are, from other images.

All five papers start from ImageNet weights (AGW, TSME, MSCMNet and GLMN: torchvision's
ResNet-50; TSME's DSGAN: a ResNet-50 encoder; MSO's PEF loss: torchvision's VGG16), and
their losses are built for pretrained features. The demo's networks are smaller than
ResNet-50 / VGG16, so torchvision's files do not fit them, and the demo cannot download
anything. This module makes the demo's equivalent: each demo-size network is trained once,
deterministically, with a plain classification objective (cross-entropy over identities)
on *visible images only* of procedural identities that are disjoint from the demo's train,
val and test identities (:func:`common.demo.identities.pretrain_identity`: other cells of the
attribute grid) and seen in other places (camera world 1, not the demo's six cameras).
It is saved in torchvision's state-dict layout and loaded by exactly the code that loads
torchvision's ImageNet files (``--pretrained PATH``, ``--vgg16 PATH``).

What it is not: ImageNet. It has seen pedestrians of the demo's renderer in visible light,
never infrared, never a demo identity, never a demo camera; it is a smaller and narrower
pretraining than ImageNet's 1.28 M images of 1,000 classes. Its figures are those of the
demo, not of the papers.

The three networks and their recipes (the ImageNet papers' optimisers, scaled in time):

* ``resnet``: the re-ID body (``fusion.backbone``: layers, base_width), and the DSGAN
  encoder (``gan``: encoder_layers, base_width) when its architecture differs; torchvision
  ResNet (last stride 2) + global average pooling + ``fc``; SGD, momentum 0.9, Nesterov,
  weight decay 1e-4, lr 0.1 (He et al., CVPR 2016), cosine decay, at the demo's input size.
* ``vgg16``: torchvision's ``vgg16().features`` at the re-ID stem's width (64 / base_width
  narrower), without the last pooling, + global average pooling + ``classifier``, at
  ``pretrain.vgg_scale`` of the input size (its layers 5-30 then see maps of the size PEF
  gives them: the stem's H/4 x W/4). Plain VGG16 has no BatchNorm, and from torchvision's
  initialisation it stayed at chance here (loss ln 300 after 4 of 8 epochs with its paper's
  SGD, lr 0.01, and with Adam 1e-3), so it trains as torchvision's ``vgg16_bn`` (a
  BatchNorm after each convolution), with the ResNet's SGD, and each BatchNorm is folded
  into its convolution when the file is written (:meth:`VGG16Classifier.plain_state_dict`):
  the file is a plain ``vgg16`` layout computing the trained network's function.

Augmentation: zero-pad (H / 24) + random crop and horizontal flip, ImageNet normalisation.
A held-out set (``held_out_per_identity`` images of every identity) gives the top-1
accuracy recorded with the weights.

Cache: ``$VIREID_CACHE/standin/<net>-<architecture>-demo<version>-seed<s>-<digest>.pth``
(default ``~/.cache/vireid``), keyed by the demo generator version, the architecture, the
input size, the recipe and the seed; a ``.json`` beside it records how it was made. A
build interrupted at any point resumes from its last finished epoch (``.partial.pt``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from common.atomic import atomic_write, atomic_write_json
from common.data.augment import imagenet_normalize, to_float_images
from common.errors import UserError
from common.nets.resnet import Stem, init_resnet_, make_layers, stage_channels
from common.runlog import info, progress_bar
from common.nets.vgg import vgg16_feature_layers
from common.weights import Weights, WeightsKind

RENDER_SIZE = (128, 64)  # the demo's image files; resized to the network's input as the array cache does
RECIPE_VERSION = 1  # bump when the training code changes what it makes (the optimiser is keyed per network)


class ResNetClassifier(nn.Module):
    """A torchvision-layout ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``) of
    any depth and width, for pretraining.

    Shapes: (B, 3, H, W) float (ImageNet-normalised) -> (B, num_classes) logits.
    """

    def __init__(self, layers: tuple[int, ...], base_width: int, num_classes: int) -> None:
        super().__init__()
        stem = Stem(base_width)
        self.conv1, self.bn1, self.relu, self.maxpool = stem.conv1, stem.bn1, stem.relu, stem.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(base_width, tuple(layers), last_stride=2)
        self.fc = nn.Linear(stage_channels(base_width)[-1], num_classes)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class VGG16Classifier(nn.Module):
    """torchvision's ``vgg16().features`` (``features.0``..``features.29``; the last pooling
    is left out) at ``64 / width_divisor`` base width, global average pooling and a linear
    ``classifier``, for pretraining.

    It trains with a BatchNorm after every convolution (``norms.<i>`` after ``features.<i>``,
    as torchvision's ``vgg16_bn``): without them the 13 plain convolutions stayed at chance
    here. :meth:`plain_state_dict` folds each BatchNorm's inference transform into its
    convolution, giving a plain ``vgg16`` layout that computes the same function as this
    network in eval mode.

    Shapes: (B, 3, H, W) float (ImageNet-normalised), H, W >= 16 -> (B, num_classes) logits.
    """

    def __init__(self, width_divisor: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg16_feature_layers(width_divisor)[:30])
        self.norms = nn.ModuleDict({str(i): nn.BatchNorm2d(layer.out_channels)
                                    for i, layer in enumerate(self.features) if isinstance(layer, nn.Conv2d)})
        self.classifier = nn.Linear(512 // width_divisor, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.features):
            x = layer(x)
            if str(i) in self.norms:
                x = self.norms[str(i)](x)
        return self.classifier(x.mean(dim=(2, 3)))

    @torch.no_grad()
    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """``features.<i>.weight/bias`` with the BatchNorm folded in: w' = w g / sqrt(v + eps),
        b' = (b - m) g / sqrt(v + eps) + beta per output channel; plus ``classifier.*``."""
        out: dict[str, torch.Tensor] = {}
        for key, norm in self.norms.items():
            conv = self.features[int(key)]
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C,)
            out[f"features.{key}.weight"] = (conv.weight * scale.view(-1, 1, 1, 1)).detach().cpu().clone()
            out[f"features.{key}.bias"] = ((conv.bias - norm.running_mean) * scale + norm.bias).detach().cpu().clone()
        out["classifier.weight"] = self.classifier.weight.detach().cpu().clone()
        out["classifier.bias"] = self.classifier.bias.detach().cpu().clone()
        return out


@dataclasses.dataclass(frozen=True)
class StandinSpec:
    """One stand-in network: ``kind`` "resnet" (``layers``, ``base_width``) or "vgg16"
    (``width_divisor``), trained at ``size`` (H, W)."""

    kind: str
    size: tuple[int, int]
    layers: tuple[int, ...] = ()
    base_width: int = 0
    width_divisor: int = 0

    def architecture(self) -> str:
        if self.kind == "resnet":
            return f"l{''.join(str(n) for n in self.layers)}-w{self.base_width}"
        return f"w{64 // self.width_divisor}"

    def build(self, num_classes: int) -> nn.Module:
        if self.kind == "resnet":
            return ResNetClassifier(self.layers, self.base_width, num_classes)
        return VGG16Classifier(self.width_divisor, num_classes)


def default_cache_dir() -> Path:
    """``$VIREID_CACHE/standin`` (default ``~/.cache/vireid/standin``)."""
    return Path(os.environ.get("VIREID_CACHE", Path.home() / ".cache" / "vireid")) / "standin"


def standin_path(spec: StandinSpec, pretrain, cache_dir: Path | None = None) -> Path:
    """Where the stand-in of ``spec`` made with the ``pretrain`` recipe (a
    :class:`common.config.PretrainConfig`) lives; the name carries its cache key."""
    from common.config import digest
    from common.demo.writing import GENERATOR_VERSION

    key = digest({"spec": dataclasses.asdict(spec), "recipe": dataclasses.asdict(pretrain), "demo": GENERATOR_VERSION,
                  "recipe_version": RECIPE_VERSION, "render": RENDER_SIZE, "optimizer": _recipe(spec)})
    name = f"{spec.kind}-{spec.architecture()}-demo{GENERATOR_VERSION}-seed{pretrain.seed}-{key[:12]}.pth"
    return Path(cache_dir or default_cache_dir()) / name


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, h, w, 3) -> uint8 (N, H, W, 3), Lanczos as the array cache decodes files."""
    if images.shape[1:3] == tuple(size):
        return images
    return np.stack([np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.LANCZOS)) for img in images])


def stand_in_data(pretrain, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pretraining images at ``size``: (train uint8 (N, H, W, 3), train labels int64,
    held-out uint8, held-out labels), the last ``held_out_per_identity`` images of each
    identity held out."""
    from common.demo.rendering import pretrain_images

    per = pretrain.images_per_identity + pretrain.held_out_per_identity
    with progress_bar(pretrain.identities * per, "stand-in images", unit="img") as advance:
        images, labels = pretrain_images(pretrain.seed, pretrain.identities, per, RENDER_SIZE, progress=lambda d, t: advance(1))
    images = _resize(images, size)
    held = (np.arange(len(labels)) % per) >= pretrain.images_per_identity
    return images[~held], labels[~held], images[held], labels[held]


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad + random crop (one offset per image) and horizontal flip, on a float batch."""
    b, _, h, w = x.shape
    pad = max(1, h // 24)
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)  # (B, H)
    cols = (ox.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)  # (B, W)
    idx = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ch = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    out = padded[idx, ch, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


@torch.no_grad()
def _accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device, batch: int = 256) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = imagenet_normalize(to_float_images(torch.from_numpy(images[i : i + batch]), device))
        correct += int((net(x).argmax(1).cpu() == torch.from_numpy(labels[i : i + batch])).sum())
    return correct / max(1, len(images))


def _recipe(spec: StandinSpec) -> dict[str, float | str]:
    """He et al.'s ImageNet SGD for both (VGG16 trains with BatchNorm, see the module docstring)."""
    return {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9, **({"batchnorm": "folded"} if spec.kind == "vgg16" else {})}


def _optimizer(net: nn.Module, recipe: dict[str, float | str]) -> torch.optim.Optimizer:
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=recipe["momentum"], nesterov=True,
                               weight_decay=recipe["weight_decay"])
    return torch.optim.Adam(net.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])


def train_standin(spec: StandinSpec, pretrain, out: Path, device: torch.device,
                  data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> Path:
    """Train one stand-in network and write its torchvision-layout state dict to ``out``
    (``fc.*`` / ``classifier.*`` included, as torchvision's files have them) with a ``.json``
    record beside it. Resumes from ``out``'s ``.partial.pt`` after an interruption.

    Args:
        spec: which network.
        pretrain: :class:`common.config.PretrainConfig` (identities, images, epochs, batch, seed).
        out: the ``.pth`` to write (from :func:`standin_path`).
        device: where to train.
        data: the images from :func:`stand_in_data` at ``spec.size`` (made when None).

    Returns:
        ``out``.
    """
    from common.checkpoint import load_checkpoint, save_checkpoint
    from common.runtime import seed_everything

    out = Path(out)
    partial = out.with_suffix(".partial.pt")
    t0 = time.perf_counter()
    train_x, train_y, held_x, held_y = data if data is not None else stand_in_data(pretrain, spec.size)
    seed_everything(pretrain.seed)
    net = spec.build(pretrain.identities).to(device)
    opt_cfg = _recipe(spec)
    optimizer = _optimizer(net, opt_cfg)
    steps_per_epoch = len(train_x) // pretrain.batch_size
    total = pretrain.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    start, history = 0, []
    if partial.exists():
        state = load_checkpoint(partial, "standin", map_location=device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, history = state["epoch"], state["history"]
        info(f"stand-in {out.name}: resuming after epoch {start}")
    with progress_bar((pretrain.epochs - start) * steps_per_epoch * pretrain.batch_size, f"stand-in {spec.kind}", unit="img") as advance:
        for epoch in range(start, pretrain.epochs):
            generator = torch.Generator().manual_seed(pretrain.seed * 1000 + epoch)
            order = torch.randperm(len(train_x), generator=generator).numpy()
            net.train()
            loss_sum, correct = 0.0, 0
            for step in range(steps_per_epoch):
                idx = np.sort(order[step * pretrain.batch_size : (step + 1) * pretrain.batch_size])
                x = to_float_images(torch.from_numpy(train_x[idx]), device)
                y = torch.from_numpy(train_y[idx]).to(device)
                logits = net(imagenet_normalize(_augment(x, generator)))
                loss = F.cross_entropy(logits, y)
                if not torch.isfinite(loss):
                    raise UserError(f"stand-in {spec.kind} diverged at epoch {epoch + 1} (loss {loss.item()}); "
                                    "lower pretrain.batch_size or report it")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.item()
                correct += int((logits.argmax(1) == y).sum())
                advance(len(idx), postfix=f"epoch {epoch + 1}/{pretrain.epochs} loss {loss_sum / (step + 1):.3f}")
            history.append({"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch,
                            "train_acc": correct / (steps_per_epoch * pretrain.batch_size)})
            save_checkpoint(partial, "standin", {"epoch": epoch + 1, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                                 "schedule": schedule.state_dict(), "history": history})
    if isinstance(net, VGG16Classifier):  # the file's network: BatchNorm folded into plain convolutions
        state = net.plain_state_dict()
        plain = VGG16Classifier(spec.width_divisor, pretrain.identities)
        plain.norms = nn.ModuleDict()
        plain.load_state_dict(state)
        net = plain.to(device)
    else:
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    held_acc = _accuracy(net, held_x, held_y, device)
    atomic_write(out, lambda f: torch.save(state, f))
    record = {"kind": spec.kind, "architecture": spec.architecture(), "size": list(spec.size), "recipe": dataclasses.asdict(pretrain),
              "optimizer": opt_cfg, "identities": pretrain.identities, "train_images": int(len(train_x)),
              "held_out_images": int(len(held_x)), "held_out_top1": held_acc, "history": history,
              "seconds": round(time.perf_counter() - t0, 1), "device": str(device)}
    atomic_write_json(out.with_suffix(".json"), record)
    partial.unlink(missing_ok=True)
    info(f"stand-in {spec.kind} {spec.architecture()}: held-out top-1 {100 * held_acc:.1f} % on {len(held_x)} images "
         f"of {pretrain.identities} identities; wrote {out}")
    return out


def needed_specs(cfg, *, gan: bool, fusion: bool, vgg16: bool) -> dict[str, StandinSpec]:
    """The stand-ins a run needs, by config key: ``gan.pretrained``,
    ``fusion.backbone.pretrained``, ``fusion.vgg16`` (only those set to ``"demo-standin"``
    and asked for)."""
    size = (cfg.data.height, cfg.data.width)
    specs: dict[str, StandinSpec] = {}
    if gan and cfg.gan.pretrained.kind is WeightsKind.STANDIN:
        specs["gan.pretrained"] = StandinSpec("resnet", size, tuple(cfg.gan.encoder_layers), cfg.gan.base_width)
    bb = cfg.fusion.backbone
    if fusion and bb.pretrained.kind is WeightsKind.STANDIN:
        specs["fusion.backbone.pretrained"] = StandinSpec("resnet", size, tuple(bb.layers), bb.base_width)
    if vgg16 and cfg.fusion.vgg16.kind is WeightsKind.STANDIN:
        if 64 % bb.base_width:
            raise UserError(f"the VGG16 stand-in needs a stem width dividing 64, not fusion.backbone.base_width = {bb.base_width}")
        vgg_size = tuple(max(16, int(round(s * cfg.pretrain.vgg_scale / 16)) * 16) for s in size)
        specs["fusion.vgg16"] = StandinSpec("vgg16", vgg_size, width_divisor=64 // bb.base_width)  # type: ignore[arg-type]
    return specs


def ensure_standins(cfg, device: torch.device, *, gan: bool = True, fusion: bool = True, vgg16: bool = True,
                    cache_dir: Path | None = None) -> dict[str, Path]:
    """Build (once; cached) every stand-in the config names and a run needs.

    Returns:
        Config key -> path of the stand-in file.
    """
    specs = needed_specs(cfg, gan=gan, fusion=fusion, vgg16=vgg16)
    paths: dict[str, Path] = {}
    data_by_size: dict[tuple[int, int], Any] = {}
    for key, spec in specs.items():
        path = standin_path(spec, cfg.pretrain, cache_dir)
        if not path.is_file():
            info(f"stand-in for {key}: building {path.name} (once; later runs load it)")
            if spec.size not in data_by_size:
                data_by_size[spec.size] = stand_in_data(cfg.pretrain, spec.size)
            path.parent.mkdir(parents=True, exist_ok=True)
            train_standin(spec, cfg.pretrain, path, device, data_by_size[spec.size])
        paths[key] = path
    return paths


def resolve_standins(cfg, device: torch.device, *, gan: bool = True, fusion: bool = True, vgg16: bool = True,
                     cache_dir: Path | None = None):
    """``cfg`` with every ``"demo-standin"`` the run needs replaced by the stand-in's path
    (built first when missing); others are left as they are.

    Returns:
        A new :class:`common.config.Config`.
    """
    paths = ensure_standins(cfg, device, gan=gan, fusion=fusion, vgg16=vgg16, cache_dir=cache_dir)
    if not paths:
        return cfg
    g, f = cfg.gan, cfg.fusion
    if "gan.pretrained" in paths:
        g = dataclasses.replace(g, pretrained=Weights(str(paths["gan.pretrained"])))
    if "fusion.backbone.pretrained" in paths:
        f = dataclasses.replace(f, backbone=dataclasses.replace(f.backbone, pretrained=Weights(str(paths["fusion.backbone.pretrained"]))))
    if "fusion.vgg16" in paths:
        f = dataclasses.replace(f, vgg16=Weights(str(paths["fusion.vgg16"])))
    return dataclasses.replace(cfg, gan=g, fusion=f)


def describe_weights(cfg) -> dict[str, dict[str, str] | str]:
    """What a run's pretrained weights are, for its results: per config key the path and
    SHA-256 of the file, or the setting ("none", "demo-standin" when unused, ...)."""
    from common.checkpoint import file_sha256

    out: dict[str, dict[str, str] | str] = {}
    for key, value in (("gan.pretrained", cfg.gan.pretrained), ("fusion.backbone.pretrained", cfg.fusion.backbone.pretrained),
                       ("fusion.vgg16", cfg.fusion.vgg16)):
        path = value.path
        if path is not None and path.is_file():
            record = path.with_suffix(".json")
            extra = {}
            if record.is_file():
                made = json.loads(record.read_text())
                extra = {"stand_in": True, "held_out_top1": made.get("held_out_top1")}
            out[key] = {"path": str(path), "sha256": file_sha256(path), **extra}
        else:
            out[key] = str(value) or "none"
    return out
