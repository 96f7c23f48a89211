"""Where an image's partner comes from: one typed partner source for training, testing, inference and export.

A method that trains on partners (TSME) sees every image next to a partner in the other
modality. Three sources exist (:class:`PartnerKind`):

| kind         | partners                                                   | made by |
|--------------|------------------------------------------------------------|---------|
| ``cache``    | the partner cache that ``generate-pairs`` wrote (stage 1's generator, uint8 shards) | :mod:`common.data.partner_cache` |
| ``on-the-fly`` | a frozen stage-1 generator translating inside each step (TSME's own way) | :func:`stage1_dsgan.generate.make_translator` |
| ``gray``     | no GAN: a visible image's BT.601 gray, an infrared image itself (the ``tsme-gray`` control) | :func:`gray_partner` |

A :class:`PartnerSource` records which one a model was trained with (in its checkpoint,
:meth:`PartnerSource.record`), identifies it in the stage key (:attr:`PartnerSource.identity`:
new partners retrain) and gives each consumer what it needs:

* training: :meth:`PartnerSource.training_inputs` -> the opened cache or a ``translate``;
* testing (the protocol): :meth:`PartnerSource.test_partners` -> :class:`MemoPartners`;
* inference and export: :meth:`PartnerSource.feature_partner` -> an ``nn.Module`` per modality
  (float pixels in, float pixels out; traceable to ONNX).

Test time translates with the generator the checkpoint records (at test time a cached
source's partners come from its generator: test images are not in the cache). Each
partner's arithmetic is written once: :func:`gray_partner` for the gray control, and for a
generator the BT.601 gray input in [-1, 1] and the uint8 rounding of its output
(``round((y + 1) * 127.5)``) that the cache stores.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.checkpoint import file_sha256
from common.data.images import BT601
from common.data.partner_cache import PartnerCache
from common.errors import UserError


class PartnerKind(enum.Enum):
    """The three partner sources (module docstring); the value is the ``--partners`` word
    (``cache`` is given as the cache's folder)."""

    CACHE = "cache"
    ON_THE_FLY = "on-the-fly"
    GRAY = "gray"


# --------------------------------------------------------------------------- the partners' arithmetic


def gray_partner(images01: torch.Tensor, is_ir: torch.Tensor | bool) -> torch.Tensor:
    """The ``tsme-gray`` control's partner: no GAN.

    A visible image's partner is its ITU-R BT.601 gray ``round(0.299 R + 0.587 G + 0.114 B)``
    on the uint8 values (computed in float64, as PIL's ``convert("L")`` and
    :func:`common.data.images.to_grayscale_bt601`), in all three channels; an infrared
    image's partner is the image itself. What TSME's DSGAN takes as input; training TSME's
    network on these instead of the DSGAN's translations separates what stage 1 contributes
    from what the second stream and its heads do.

    Args:
        images01: float (B, 3, H, W) in [0, 1] on multiples of 1/255 (decoded uint8).
        is_ir: bool (B,) (or one bool for the whole batch): rows that are infrared.

    Returns:
        float (B, 3, H, W) in [0, 1] on multiples of 1/255, ``images01``'s dtype and device.
    """
    rgb = torch.round(images01.double() * 255.0)  # the uint8 values, exactly
    luma = torch.round(rgb[:, 0:1] * BT601[0] + rgb[:, 1:2] * BT601[1] + rgb[:, 2:3] * BT601[2]).clamp(0.0, 255.0)  # (B, 1, H, W)
    gray = (luma / 255.0).to(images01.dtype).expand(-1, 3, -1, -1)
    if isinstance(is_ir, bool):
        return images01 if is_ir else gray
    return torch.where(is_ir.to(images01.device).view(-1, 1, 1, 1), images01, gray)


def gray_translate(images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
    """:func:`gray_partner` on uint8 batches, as the training loop and the protocol take partners.

    Args:
        images: uint8 (B, H, W, 3), any device.
        is_ir: bool (B,).

    Returns:
        uint8 (B, H, W, 3) CPU tensor.
    """
    x = images.cpu().permute(0, 3, 1, 2).float() / 255.0
    out = gray_partner(x, is_ir.cpu())
    return torch.round(out.double() * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class GrayPartner(nn.Module):
    """:func:`gray_partner` of one modality's batch, as a module (inference, ONNX export).

    Args:
        modality: "vis" or "ir".

    Shapes:
        (B, 3, H, W) float [0, 1] -> (B, 3, H, W) float [0, 1].
    """

    def __init__(self, modality: str) -> None:
        super().__init__()
        self.modality = modality

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return gray_partner(images01, self.modality == "ir")


class GeneratedPartner(nn.Module):
    """A frozen DSGAN generator's partner of one modality's batch, as a module (inference, export).

    The same arithmetic as the protocol's partners (:func:`stage1_dsgan.generate.make_translator`
    then the uint8 partner store): the generator's own input in [-1, 1] (BT.601 gray, or the
    colour image for a visible -> infrared generator trained with ``gan.input = "rgb"``:
    :meth:`stage1_dsgan.networks.DSGANGenerator.prepare`) -> generator -> ``round((y + 1) *
    127.5)`` clamped to 0-255 -> / 255.

    Args:
        generator: ``g_vis2ir`` for visible images, ``g_ir2vis`` for infrared ones, in eval mode.

    Shapes:
        (B, 3, H, W) float [0, 1] -> (B, 3, H, W) float [0, 1] on multiples of 1/255.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        y = self.generator(self.generator.prepare(images01))  # (B, 3, H, W) in [-1, 1]
        return torch.round((y.float() + 1.0) * 127.5).clamp(0.0, 255.0) / 255.0  # uint8 levels, as the partner store


class MemoPartners:
    """Partners translated on demand and kept per image index (the protocol's partner source).

    The translation does not change during stage 2, so each test image is translated once
    even when it is evaluated every few epochs.

    Args:
        translate: ``translate(images uint8 (B, H, W, 3), is_ir bool (B,)) -> uint8``.
        count: number of images in the split.
    """

    def __init__(self, translate, count: int) -> None:
        self.translate = translate
        self.store: np.ndarray | None = None
        self.done = np.zeros(count, dtype=bool)

    def __call__(self, indices: np.ndarray, images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
        indices = np.asarray(indices)
        missing = ~self.done[indices]
        if missing.any():
            rows = np.flatnonzero(missing)
            out = self.translate(images[torch.from_numpy(rows)], is_ir[torch.from_numpy(rows)]).numpy()
            if self.store is None:
                self.store = np.empty((len(self.done), *out.shape[1:]), dtype=np.uint8)
            self.store[indices[rows]] = out
            self.done[indices[rows]] = True
        return torch.from_numpy(self.store[indices])


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class PartnerSource:
    """Which partners a model trains and tests with (module docstring).

    Attributes:
        kind: :class:`PartnerKind`.
        generator: the stage-1 checkpoint (``gan.pt``) for ``cache`` (the one that wrote it)
            and ``on-the-fly``; None for ``gray``.
        generator_sha256: its SHA-256 (hex), checked wherever it is loaded again.
        cache: the partner cache folder (``cache`` only).
        data_fingerprint: the training split the cache was made for (``cache`` only).
    """

    kind: PartnerKind
    generator: str | None = None
    generator_sha256: str | None = None
    cache: str | None = None
    data_fingerprint: str | None = None

    @classmethod
    def gray(cls) -> "PartnerSource":
        """The trivial partner, no stage 1."""
        return cls(PartnerKind.GRAY)

    @classmethod
    def from_cache(cls, cache: PartnerCache) -> "PartnerSource":
        """The partners of an opened, checked partner cache."""
        m = cache.manifest
        return cls(PartnerKind.CACHE, m["generator"], m["generator_sha256"], str(cache.folder), m["data_fingerprint"])

    @classmethod
    def on_the_fly(cls, gan_checkpoint: Path) -> "PartnerSource":
        """A frozen generator translating inside each training step.

        Raises:
            UserError: the checkpoint is missing (named).
        """
        path = Path(gan_checkpoint)
        if not path.is_file():
            raise UserError(f"generator {path} does not exist; pass the gan.pt that train-gan wrote to --gan-checkpoint")
        return cls(PartnerKind.ON_THE_FLY, str(path), file_sha256(path))

    @property
    def identity(self) -> str:
        """What identifies the partners in the stage-2 stage key (new partners retrain)."""
        if self.kind is PartnerKind.CACHE:
            return f"{self.generator_sha256}:{self.data_fingerprint}"
        if self.kind is PartnerKind.ON_THE_FLY:
            return f"{self.generator_sha256}:on-the-fly"
        return PartnerKind.GRAY.value

    def record(self) -> dict[str, Any]:
        """The checkpoint entry (``meta["partners"]``) :meth:`from_record` reads back."""
        return {"kind": self.kind.value, "generator": self.generator, "generator_sha256": self.generator_sha256, "cache": self.cache,
                "data_fingerprint": self.data_fingerprint}

    @classmethod
    def from_record(cls, meta: dict[str, Any]) -> "PartnerSource | None":
        """The source a checkpoint records, or None (a method without partners). Reads the
        entry :meth:`record` writes and the older keys (``gan_checkpoint``, ``gan_sha256``,
        ``pairs`` = cache folder | "on-the-fly" | "gray")."""
        rec = meta.get("partners")
        if isinstance(rec, dict):
            return cls(PartnerKind(rec["kind"]), rec.get("generator"), rec.get("generator_sha256"), rec.get("cache"), rec.get("data_fingerprint"))
        old = meta.get("pairs")
        if old is None and meta.get("gan_checkpoint") is None:
            return None
        if old == PartnerKind.GRAY.value or meta.get("gan_checkpoint") == PartnerKind.GRAY.value:
            return cls.gray()
        kind = PartnerKind.ON_THE_FLY if old == PartnerKind.ON_THE_FLY.value else PartnerKind.CACHE
        return cls(kind, meta.get("gan_checkpoint"), meta.get("gan_sha256"), None if kind is PartnerKind.ON_THE_FLY else old)

    def describe(self) -> str:
        """One line for logs."""
        if self.kind is PartnerKind.GRAY:
            return "gray partners (no GAN: the control)"
        if self.kind is PartnerKind.ON_THE_FLY:
            return f"partners translated on the fly by {self.generator}"
        return f"partner cache {self.cache} (generator {self.generator})"

    # ----------------------------------------------------------------- what each consumer needs

    def load_generators(self, device: torch.device, *, override: Path | None = None, beside: Path | None = None,
                        image_size: tuple[int, int] | None = None, model: str = "this model"):
        """The frozen generators of this source (``cache`` / ``on-the-fly``).

        Args:
            override: a generator to use instead of the recorded one (``--gan-checkpoint``;
                its SHA-256 is then not compared).
            beside: a ``gan.pt`` to use when the recorded path moved but this file has the
                recorded SHA-256 (``<run>/gan/gan.pt`` next to the checkpoint).
            image_size: (H, W) the generator must have been trained at.
            model: what uses it, for messages.

        Raises:
            UserError: no generator, a missing file, a changed file, another size.
        """
        from stage1_dsgan.generate import load_generators

        if self.kind is PartnerKind.GRAY:
            raise ValueError("gray partners have no generator")
        if override is not None:
            path, expected = Path(override), None
        else:
            path = Path(self.generator) if self.generator else None
            expected = self.generator_sha256
            if (path is None or not path.is_file()) and beside is not None and beside.is_file() and expected \
                    and file_sha256(beside) == expected:
                path = beside
        if path is None or not path.is_file():
            raise UserError(f"{model} makes its partners with its generator {self.generator}, which is missing; "
                            "pass --gan-checkpoint GAN.pt")
        gens = load_generators(path, device)
        if expected and gens.sha256 != expected:
            raise UserError(f"generator {path} changed since {model} was trained; pass the original with --gan-checkpoint")
        if image_size is not None and tuple(gens.image_size) != tuple(image_size):
            raise UserError(f"generator {path} was trained at {gens.image_size[0]}x{gens.image_size[1]}, {model} at "
                            f"{image_size[0]}x{image_size[1]}; pass the generator it was trained with")
        return gens

    def training_inputs(self, device: torch.device, *, image_size: tuple[int, int], amp: bool,
                        cache: PartnerCache | None = None) -> tuple[PartnerCache | None, Any]:
        """(partner cache, translate) for :func:`stage2_fusion.train.train_fusion`: the opened
        cache for ``cache`` (pass it: it was opened and checked against the split), else a
        ``translate(images uint8, is_ir) -> uint8`` on the training device.

        Raises:
            UserError: as :meth:`load_generators`.
        """
        if self.kind is PartnerKind.CACHE:
            if cache is None:
                raise ValueError("a cached partner source trains from its opened cache; pass cache=")
            return cache, None
        if self.kind is PartnerKind.GRAY:
            return None, gray_translate
        from stage1_dsgan.generate import make_translator

        gens = self.load_generators(device, image_size=image_size, model="this run")
        return None, make_translator(gens, device, amp=amp)

    def test_partners(self, count: int, device: torch.device, *, override: Path | None = None, beside: Path | None = None,
                      model: str = "this model") -> MemoPartners:
        """The protocol's partners of a test split of ``count`` images.

        Raises:
            UserError: as :meth:`load_generators`.
        """
        if self.kind is PartnerKind.GRAY and override is None:
            return MemoPartners(gray_translate, count)
        from stage1_dsgan.generate import make_translator

        gens = (self if self.kind is not PartnerKind.GRAY else PartnerSource(PartnerKind.ON_THE_FLY)).load_generators(
            device, override=override, beside=beside, model=model)
        return MemoPartners(make_translator(gens, device), count)

    def feature_partner(self, modality: str, generators=None) -> nn.Module:
        """The partner maker of one modality for :class:`pipelines.inference.FeatureGraph`:
        :class:`GrayPartner`, or :class:`GeneratedPartner` of ``generators`` (from
        :meth:`load_generators`)."""
        if generators is None:
            return GrayPartner(modality)
        return GeneratedPartner(generators.g_vis2ir if modality == "vis" else generators.g_ir2vis)


def parse_partners_option(value: str | None, gan_checkpoint: Path | None) -> tuple[PartnerKind | None, Path | None]:
    """``--partners`` (a partner cache folder, ``on-the-fly`` or ``gray``) -> (kind, cache folder).

    Raises:
        UserError: ``on-the-fly`` without ``--gan-checkpoint``.
    """
    if value is None:
        return None, None
    if value == PartnerKind.ON_THE_FLY.value:
        if gan_checkpoint is None:
            raise UserError("--partners on-the-fly translates with a frozen generator: pass --gan-checkpoint GAN.pt")
        return PartnerKind.ON_THE_FLY, None
    if value == PartnerKind.GRAY.value:
        return PartnerKind.GRAY, None
    return PartnerKind.CACHE, Path(value)
