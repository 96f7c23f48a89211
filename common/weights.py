"""Which pretrained weights a network starts from: one typed choice instead of magic strings.

A config key such as ``fusion.backbone.pretrained``, ``gan.pretrained`` or ``fusion.vgg16``
holds a :class:`Weights`: written in TOML and on the command line as one string, read
back as one of five kinds (:class:`WeightsKind`):

| text              | kind       | meaning                                                          |
|-------------------|------------|------------------------------------------------------------------|
| a file path       | PATH       | a torchvision-layout state dict (ImageNet ResNet-50 / VGG16, or a stand-in file) |
| ``imagenet``      | IMAGENET   | torchvision's weights cache (``$TORCH_HOME/hub/checkpoints``), never downloaded |
| ``demo-standin``  | STANDIN    | the demo's ImageNet stand-in (:mod:`common.demo.standin`), built and replaced by its file path by the pipeline commands |
| ``none`` (or ``""``) | NONE    | random initialisation                                            |
| ``required``      | REQUIRED   | the paper profile's: no choice made yet, training refuses to start |

:class:`Weights` is a ``str`` (its text, exactly as written), so a resolved config, its
TOML file and the digests of stage inputs stay what they were; code asks ``.kind`` (or
``.loads``, ``.path``) instead of comparing strings.
"""

from __future__ import annotations

import enum
from pathlib import Path


class WeightsKind(enum.Enum):
    """The five kinds of weights choice (see the module docstring)."""

    PATH = "path"
    IMAGENET = "imagenet"
    STANDIN = "demo-standin"
    NONE = "none"
    REQUIRED = "required"


_KEYWORDS = {"imagenet": WeightsKind.IMAGENET, "demo-standin": WeightsKind.STANDIN, "none": WeightsKind.NONE, "": WeightsKind.NONE,
             "required": WeightsKind.REQUIRED}


class Weights(str):
    """A weights choice: the text as written, plus its :class:`WeightsKind`.

    ``Weights("none").kind is WeightsKind.NONE``; ``Weights("/w/resnet50.pth").path ==
    Path("/w/resnet50.pth")``. Any other text is a path (whether the file exists is checked
    where it is loaded, :func:`common.nets.resnet.resolve_pretrained`).

    Raises:
        TypeError: a value that is not a string.
    """

    def __new__(cls, text: str) -> "Weights":
        if not isinstance(text, str):
            raise TypeError(f"a weights choice is a string (a path, imagenet, demo-standin, none or required), got {text!r}")
        return super().__new__(cls, text)

    @property
    def kind(self) -> WeightsKind:
        """What the text names."""
        return _KEYWORDS.get(str(self), WeightsKind.PATH)

    @property
    def path(self) -> Path | None:
        """The file for a PATH choice, else None."""
        return Path(str(self)) if self.kind is WeightsKind.PATH else None

    @property
    def loads(self) -> bool:
        """Whether the network starts from a weights file (PATH, IMAGENET or STANDIN)."""
        return self.kind in (WeightsKind.PATH, WeightsKind.IMAGENET, WeightsKind.STANDIN)


#: The choices written by name.
NONE = Weights("none")
STANDIN = Weights("demo-standin")
REQUIRED = Weights("required")
