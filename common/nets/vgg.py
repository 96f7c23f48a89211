"""torchvision's VGG16 ``features`` layout (Simonyan & Zisserman, ICLR 2015, configuration D),
at any width, and reading its state dicts.

MSO's perceptual edge loss (``stage2_fusion.losses.PerceptualEdgeLoss``) chains slices of
``vgg16().features``; the demo's ImageNet stand-in (:mod:`common.demo.standin`) trains the same
layout at the demo's width. Indices and parameter names match torchvision
(``features.<i>.weight``), so torchvision's ImageNet file and the stand-in's file load
through the same code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.checkpoint import read_tensor_file
from common.errors import UserError

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# torchvision's VGG16 ``features`` (configuration "D"): 3x3 convolutions (padding 1) each
# followed by an in-place ReLU, "M" = 2x2 max pooling; indices as torchvision numbers them.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_feature_layers(width_divisor: int = 1) -> list[nn.Module]:
    """torchvision's ``vgg16().features`` as a list of 31 layers, every width divided by
    ``width_divisor``, initialised as torchvision does (Kaiming-normal fan-out convolutions,
    zero biases).

    Raises:
        ValueError: ``width_divisor`` not a positive divisor of 64.
    """
    if isinstance(width_divisor, bool) or not isinstance(width_divisor, int) or width_divisor < 1 or 64 % width_divisor:
        raise ValueError(f"width_divisor must be a positive divisor of 64, got {width_divisor!r}")
    layers: list[nn.Module] = []
    in_ch = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = item // width_divisor
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            in_ch = out_ch
    return layers


def read_vgg16_state(path: Path) -> dict:
    """A torchvision-layout VGG16 state dict from a local file (never downloaded).

    Raises:
        UserError: the file is missing (naming where to get it) or not a readable state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"VGG16 weights {path} not found; download {VGG16_URL} (torchvision VGG16_Weights.IMAGENET1K_V1) "
            "on a machine with internet, copy it here and pass its path, or pass none for a random VGG16"
        )
    state = read_tensor_file(path, "VGG16 weights", f"pass torchvision's {VGG16_FILE} or the demo's stand-in")
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a torchvision VGG16 state dict; pass {VGG16_FILE}")
    return state
