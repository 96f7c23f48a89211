"""ResNet building blocks shared by the DSGAN encoder and the AGW re-ID backbone.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, bottleneck variant
with the stride on the 3x3 convolution (torchvision's "ResNet v1.5"). Parameter names
match torchvision's ``resnet50`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so an
ImageNet state dict loads directly when ``layers == (3, 4, 6, 3)`` and
``base_width == 64``. Smaller settings (the demo profile) keep the structure and scale
every width by ``base_width / 64``; the demo's ImageNet stand-in (:mod:`common.demo.standin`) is
a state dict of the same layout at those sizes and loads through the same functions
(:func:`resolve_pretrained`, :func:`load_resnet_state`, :func:`load_into`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import read_tensor_file
from common.errors import UserError
from common.weights import REQUIRED, Weights, WeightsKind

EXPANSION = 4
RESNET50_LAYERS = (3, 4, 6, 3)
TORCHVISION_RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth")
RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def pretrained_required_message(key: str) -> str:
    """The one-line refusal for a run that has not chosen its ImageNet weights (the paper
    profile's ``"required"``: both papers start from ImageNet, so a run must choose)."""
    return (
        f"{key} is '{REQUIRED}': the paper profile starts from ImageNet ResNet-50 weights, as TSME and AGW do; "
        f"pass --pretrained PATH (torchvision's resnet50-0676ba61.pth, from {RESNET50_URL}) or --pretrained none "
        "to train from scratch on purpose"
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with a residual connection.

    Shapes: (B, in_ch, H, W) -> (B, planes * 4, H / stride, W / stride), float.
    """

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Stem(nn.Module):
    """conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (3x3, stride 2).

    Shapes: (B, 3, H, W) -> (B, base_width, H/4, W/4). ``forward_pre_pool`` stops before
    the max-pool: (B, base_width, H/2, W/2) (the DSGAN's first skip tap).
    """

    def __init__(self, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward_pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.forward_pre_pool(x))


def make_layers(base_width: int, layers: tuple[int, ...], last_stride: int = 2) -> list[nn.Sequential]:
    """The four residual stages ``layer1``..``layer4``.

    Stage i (0-based) has ``layers[i]`` bottlenecks of ``base_width * 2**i`` planes and
    outputs ``base_width * 2**i * 4`` channels; stages 2-4 halve the resolution with their
    first block, except that stage 4 uses ``last_stride`` (1 in AGW/TSME, keeping
    (H/16, W/16): 18 x 9 at 288 x 144).

    Raises:
        ValueError: unless 4 stage lengths >= 1 are given.
    """
    if len(layers) != 4 or min(layers) < 1:
        raise ValueError(f"need 4 stage lengths >= 1, got {layers}")
    stages = []
    in_ch = base_width
    for i, n_blocks in enumerate(layers):
        planes = base_width * 2**i
        stride = 1 if i == 0 else (last_stride if i == 3 else 2)
        blocks = [Bottleneck(in_ch, planes, stride)]
        in_ch = planes * EXPANSION
        blocks += [Bottleneck(in_ch, planes, 1) for _ in range(n_blocks - 1)]
        stages.append(nn.Sequential(*blocks))
    return stages


def stage_channels(base_width: int) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4: (4w, 8w, 16w, 32w); (256, ..., 2048) for w = 64."""
    return tuple(base_width * 2**i * EXPANSION for i in range(4))


def init_resnet_(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BN = (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resolve_pretrained(spec: str | Weights) -> Path | None:
    """Find ImageNet ResNet-50 weights: ``"none"``, ``"imagenet"`` or a file path.

    ``"imagenet"`` looks in the torchvision weights cache (``$TORCH_HOME/hub/checkpoints``,
    default ``~/.cache/torch/hub/checkpoints``). Nothing is ever downloaded.

    Returns:
        The file, or None for ``"none"``.

    Raises:
        UserError: when the file is not there, saying how to obtain it; for
            ``"required"`` (the paper profile's default: no choice made yet).
    """
    weights = Weights(str(spec))
    if weights.kind is WeightsKind.REQUIRED:
        raise UserError(pretrained_required_message("pretrained"))
    if weights.kind is WeightsKind.NONE:
        return None
    if weights.kind is WeightsKind.STANDIN:
        raise UserError("pretrained weights 'demo-standin' name the demo's ImageNet stand-in, which the pipeline commands build and "
                        "resolve (run-all, train-gan, train-fusion, ablate, pretrain); building a model yourself, pass the file "
                        "path that pipeline pretrain prints")
    how = (
        f"download {RESNET50_URL} (torchvision ResNet50_Weights.IMAGENET1K_V1) on a machine with internet, "
        "copy it here and pass its path, or use 'none' to train from scratch"
    )
    if weights.kind is WeightsKind.IMAGENET:
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        for candidate in sorted(glob.glob(str(torch_home / "hub" / "checkpoints" / "resnet50-*.pth"))):
            return Path(candidate)
        raise UserError(f"no ImageNet ResNet-50 weights in the torchvision cache {torch_home / 'hub' / 'checkpoints'}; {how}")
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"pretrained weights {path} not found; {how}")
    return path


def load_resnet_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a torchvision-layout ResNet state dict (``conv1``, ``bn1``, ``layer1``..``layer4``;
    ``fc.*`` dropped): torchvision's ImageNet ResNet-50 file, or the demo's stand-in
    (:mod:`common.demo.standin`) at the demo's depth and width.

    Raises:
        UserError: if the file cannot be read or is not a ResNet state dict.
    """
    state = read_tensor_file(path, "pretrained weights", "pass torchvision's resnet50-0676ba61.pth or the demo's stand-in")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "conv1.weight" not in state or not any(str(k).startswith("layer4.") for k in state):
        raise UserError(f"{path} is not a torchvision ResNet state dict (no conv1 / layer4 weights); pass resnet50-0676ba61.pth "
                        "or the demo's stand-in")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _fit_hint(what: str) -> str:
    return (f"pretrained weights must have the {what}'s depth and width: torchvision's ImageNet ResNet-50 needs layers = [3, 4, 6, 3] "
            "and base_width = 64 (the paper profile), the demo's stand-in is made at the demo's sizes (pipeline pretrain); "
            "or pass none")


def load_into(module: nn.Module, state: dict[str, torch.Tensor], rename: dict[str, str], what: str) -> int:
    """Copy ``state`` into ``module`` after renaming key prefixes (``{"conv1.": "stem.conv1."}``).

    Every renamed key must exist in ``module`` with the same shape, and every tensor of
    ``module`` under a renamed prefix must be given (BatchNorm's ``num_batches_tracked``
    aside): weights of another depth or width are refused, never loaded in part.

    Returns:
        The number of tensors copied.

    Raises:
        UserError: on a shape mismatch or a missing or extra tensor (e.g. a demo-width
            model given ResNet-50 weights).
    """
    own = module.state_dict()
    loaded = {}
    for key, value in state.items():
        for src, dst in rename.items():
            if key.startswith(src):
                new_key = dst + key[len(src):]
                if new_key not in own:
                    raise UserError(f"the weights do not fit the {what} ({key} has no place in it); {_fit_hint(what)}")
                if own[new_key].shape != value.shape:
                    raise UserError(f"the weights do not fit the {what} ({new_key}: {tuple(value.shape)} in the file, "
                                    f"{tuple(own[new_key].shape)} here); {_fit_hint(what)}")
                loaded[new_key] = value
    missing = [k for k in own if any(k.startswith(dst) for dst in rename.values()) and k not in loaded
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"the weights do not fit the {what} ({missing[0]} is not in the file); {_fit_hint(what)}")
    module.load_state_dict(loaded, strict=False)
    return len(loaded)


#: torchvision ResNet keys -> a module with ``stem`` (:class:`Stem`) and ``layer1``..``layer4``
#: (the DSGAN encoders, stage 1's re-ID networks).
STEM_AND_LAYERS = {"conv1.": "stem.conv1.", "bn1.": "stem.bn1.", **{f"layer{i}.": f"layer{i}." for i in range(1, 5)}}


def load_resnet_parts(module: nn.Module, spec: str, renames: list[dict[str, str]], what: str) -> int:
    """Load a torchvision ResNet state dict (``spec``: path, "imagenet" or "none", see
    :func:`resolve_pretrained`) into the parts of ``module`` that ``renames`` name: each dict
    maps torchvision prefixes to ``module``'s (``{"conv1.": "stems.vis.conv1."}``), loaded
    with :func:`load_into`. The re-ID backbones (AGW's stems and body, GLMN's modality layers
    and body) load through it.

    Returns:
        Number of tensors loaded (0 for "none").

    Raises:
        UserError: as :func:`resolve_pretrained`, :func:`load_resnet_state` and :func:`load_into`.
    """
    path = resolve_pretrained(spec)
    if path is None:
        return 0
    state = load_resnet_state(path)
    return sum(load_into(module, state, rename, what) for rename in renames)
