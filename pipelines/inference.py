"""Use a trained model: embed pictures of people, visible or infrared, as the test protocol does.

:class:`ReidExtractor` loads a re-ID checkpoint (``reid.pt`` / ``best.pt``) and, for TSME,
the generator that makes each image's partner, and turns images into the features the
protocol compares::

    from pipelines.inference import ReidExtractor

    extractor = ReidExtractor("checkpoints/demo-tsme-demo/fusion/reid.pt", device="cpu")
    query = extractor.extract(["cam3/0001/0001.jpg"], "infrared")  # float32 (1, D), unit rows
    gallery = extractor.extract(gallery_paths, "visible")          # float32 (N, D)
    distance = 1.0 - query @ gallery.T                              # cosine distance, (1, N)

What "as the test protocol does" means, step by step (each step is the protocol's own code,
:mod:`stage2_fusion.evaluate`, or shares it):

1. a file (or PIL image, or array at another size) becomes RGB uint8 at the checkpoint's
   (H, W) by :func:`common.data.images.image_to_array`, the array cache's decoder (Lanczos);
2. uint8 -> float [0, 1] (:func:`common.data.augment.to_float_images`) -> ImageNet normalisation;
3. a method that needs partners (TSME): the partner source the checkpoint records
   (:class:`pipelines.partners.PartnerSource`): the frozen generator's translation of the
   image's BT.601 gray, quantised to uint8 levels as the protocol's partners are, or for
   the ``tsme-gray`` control the visible image's gray (the infrared image itself), the
   same function the protocol uses (:func:`pipelines.partners.gray_partner`); then normalised;
4. the method's test feature (``model.extract``: its BNNeck side, GLMN's built-in flip,
   MSCMNet's averaged stems, TSME's six stripes), averaged with the flipped image's
   feature when the checkpoint's recipe tests with flip (``eval.flip``), L2-normalised.

Steps 2-4 are one ``nn.Module`` per modality, :class:`FeatureGraph`, which is also what
``pipeline export`` writes as ONNX, so the exported graph and :meth:`ReidExtractor.extract`
compute the same function of the pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from common.checkpoint import file_sha256
from common.config import test_feature
from common.data.augment import imagenet_normalize, to_float_images
from common.data.images import image_to_array
from common.errors import UserError
from common.runlog import progress_bar
from common.runtime import autocast, resolve_device
from pipelines.partners import PartnerKind, PartnerSource
from stage2_fusion.methods import method_spec

#: Command-line and API names of the two modalities -> the streams' names inside the models.
MODALITIES = {"visible": "vis", "infrared": "ir", "vis": "vis", "ir": "ir"}
#: Stream name -> the word used in files, metadata and messages.
MODALITY_WORDS = {"vis": "visible", "ir": "infrared"}
#: File name endings read as images when a folder is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageLike = Union[str, Path, Image.Image, np.ndarray]


# --------------------------------------------------------------------------- the graph


class FeatureGraph(nn.Module):
    """Pixels of one modality -> the protocol's test feature: the whole computation after decoding.

    Args:
        model: a stage-2 method model in eval mode (``extract(inputs, partners, feature)``).
        modality: "vis" or "ir": the stream the images go through.
        feature: "pre" or "post" BNNeck side.
        flip: average with the horizontally flipped image's feature (the partner flipped too,
            as :func:`stage2_fusion.evaluate.extract_features`), then L2-normalise.
        partner: the partner maker for methods that need one (TSME), else None.

    Shapes:
        ``forward(images)``: float32 (B, 3, H, W) RGB in [0, 1] at the checkpoint's (H, W)
        -> float32 (B, D), rows of unit L2 norm.
    """

    def __init__(self, model: nn.Module, modality: str, feature: str, flip: bool, partner: nn.Module | None) -> None:
        super().__init__()
        self.model = model
        self.modality = modality
        self.feature = feature
        self.flip = flip
        self.partner = partner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.modality
        x = imagenet_normalize(images)  # (B, 3, H, W)
        pair = None if self.partner is None else {m: imagenet_normalize(self.partner(images))}
        feats = self.model.extract({m: x}, pair, self.feature).float()  # (B, D), unit rows
        if self.flip:
            flipped_pair = None if pair is None else {m: pair[m].flip(-1)}
            feats = F.normalize(feats + self.model.extract({m: x.flip(-1)}, flipped_pair, self.feature).float(), dim=1)
        return feats


def model_modalities(model: nn.Module) -> tuple[str, ...]:
    """The modalities ("vis", "ir") a stage-2 model has a test stream for, from its modules.

    AGW / MSO / MSCMNet: the backbone's stems (MSCMNet's ``vis_aug`` / ``ir_aug`` belong to
    ``vis`` / ``ir``); TSME: its real stream's stems or networks; GLMN: its modality layers.
    """
    names: set[str] = set()
    for owner in (getattr(model, "backbone", None), getattr(model, "real", None)):
        streams = getattr(owner, "stems", None) or getattr(owner, "nets", None)
        if streams is not None:
            names |= set(streams.keys())
    specific = getattr(model, "specific", None)
    if specific is not None:
        names |= set(specific.keys())
    return tuple(m for m in ("vis", "ir") if m in names)


# --------------------------------------------------------------------------- the extractor


class ReidExtractor:
    """A trained re-ID checkpoint ready to embed images of either modality.

    Args:
        checkpoint: ``reid.pt`` / ``best.pt`` / ``last.pt`` of ``pipeline train-fusion`` or
            ``run-all``, any of the five methods.
        device: "cpu", "cuda", "auto" or a :class:`torch.device`.
        gan_checkpoint: TSME only: the generator to make partners with; default the one
            the checkpoint records (its SHA-256 checked), or ``<run>/gan/gan.pt`` beside the
            checkpoint when the recorded path moved and that file has the recorded SHA-256.
        feature: "pre" or "post"; default the method's test feature (recipe
            ``test_feature`` or ``eval.feature``).
        flip: average with the flipped image; default the checkpoint's ``eval.flip``.
        batch_size: images per forward pass; default the checkpoint's ``eval.batch_size``.
        amp: bf16 autocast on CUDA as the protocol (``fusion.amp``); no effect on CPU.

    Attributes:
        path, sha256: the checkpoint and its SHA-256 (hex).
        method: "agw" | "tsme" | "mso" | "mscmnet" | "glmn".
        image_size: (H, W) in pixels the network takes.
        modalities: ("vis", "ir"), the streams the model has.
        feature, flip, batch_size, device: as resolved.
        dim: D, the feature width.

    Raises:
        UserError: missing or unreadable checkpoint, not a re-ID checkpoint, a TSME
            checkpoint whose generator is missing or changed, ``feature`` not pre/post.
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu", *, gan_checkpoint: str | Path | None = None,
                 feature: str | None = None, flip: bool | None = None, batch_size: int | None = None,
                 amp: bool | None = None) -> None:
        from stage2_fusion.evaluate import load_reid_model

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.path = Path(checkpoint)
        self.model, self.meta, self.cfg = load_reid_model(self.path, self.device)
        self.sha256 = file_sha256(self.path)
        self.method: str = self.meta["method"]
        self.image_size: tuple[int, int] = tuple(int(v) for v in self.meta["image_size"])
        self.feature = feature or test_feature(self.cfg, self.method)
        if self.feature not in ("pre", "post"):
            raise UserError(f"--feature {self.feature} is unknown; use pre or post (the BNNeck side)")
        self.flip = self.cfg.eval.flip if flip is None else bool(flip)
        self.batch_size = int(batch_size or self.cfg.eval.batch_size)
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: give at least 1")
        self.amp = self.cfg.fusion.amp if amp is None else bool(amp)
        self.modalities = model_modalities(self.model)
        self.partners = PartnerSource.from_record(self.meta) if method_spec(self.method).needs_partners else None
        self.generators = None
        if self.partners is not None and (self.partners.kind is not PartnerKind.GRAY or gan_checkpoint is not None):
            source = self.partners if self.partners.kind is not PartnerKind.GRAY else PartnerSource(PartnerKind.ON_THE_FLY)
            beside = self.path.resolve().parent.parent / "gan" / "gan.pt"  # <run>/fusion/reid.pt -> <run>/gan/gan.pt
            self.generators = source.load_generators(self.device, override=gan_checkpoint, beside=beside, image_size=self.image_size,
                                                     model=f"{self.path} ({self.method})")
        self._graphs: dict[str, FeatureGraph] = {}
        probe = torch.zeros(1, 3, *self.image_size, device=self.device)
        with torch.no_grad():
            self.dim: int = int(self.graph(self.modalities[0])(probe).shape[1])

    def modality(self, name: str) -> str:
        """The stream name ("vis" / "ir") of a modality name ("visible", "infrared", "vis", "ir").

        Raises:
            UserError: a name that is not a modality, or one the checkpoint has no stream for.
        """
        stream = MODALITIES.get(str(name).lower())
        have = " or ".join(MODALITY_WORDS[m] for m in self.modalities)
        if stream is None:
            raise UserError(f"modality '{name}' is unknown; {self.path} embeds {have} images: pass --modality "
                            f"{'|'.join(MODALITY_WORDS[m] for m in self.modalities)}")
        if stream not in self.modalities:
            raise UserError(f"{self.path} ({self.method}) has no {MODALITY_WORDS[stream]} stream; it embeds {have} images only")
        return stream

    def graph(self, modality: str) -> FeatureGraph:
        """The :class:`FeatureGraph` of one modality (built once, on the extractor's device).

        Raises:
            UserError: as :meth:`modality`.
        """
        stream = self.modality(modality)
        if stream not in self._graphs:
            partner = None if self.partners is None else self.partners.feature_partner(stream, self.generators)
            self._graphs[stream] = FeatureGraph(self.model, stream, self.feature, self.flip, partner).eval()
        return self._graphs[stream]

    def describe(self) -> dict[str, Any]:
        """What a feature file or an exported graph records about these features."""
        return {"checkpoint": str(self.path), "checkpoint_sha256": self.sha256, "method": self.method, "feature": self.feature,
                "flip": self.flip, "image_size": list(self.image_size), "dim": self.dim}

    @torch.no_grad()
    def batches(self, images: Sequence[ImageLike] | np.ndarray | torch.Tensor, modality: str, *, batch_size: int | None = None,
                show_progress: bool = False, threads: int = 4) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features of images[start : start + n])`` batch by batch.

        For galleries too large to hold: each batch is decoded, embedded and handed over
        before the next is read. Arguments as :meth:`extract`.
        """
        graph = self.graph(modality)
        size = self.batch_size if batch_size is None else int(batch_size)
        if size < 1:
            raise UserError(f"--batch-size {size}: give at least 1")
        items = _as_items(images, self.image_size)
        with progress_bar(len(items), f"extracting {MODALITY_WORDS[graph.modality]} features", unit="img",
                          enabled=show_progress) as advance, ThreadPoolExecutor(max(1, threads)) as pool:
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                pixels = np.stack(list(pool.map(lambda item: _to_pixels(item, self.image_size), chunk)))  # (n, H, W, 3) uint8
                x = to_float_images(torch.from_numpy(pixels), self.device)  # (n, 3, H, W) in [0, 1]
                with autocast(self.device, self.amp):
                    feats = graph(x).float()
                yield start, feats.cpu().numpy()
                advance(len(chunk))

    def extract(self, images: Sequence[ImageLike] | np.ndarray | torch.Tensor | ImageLike, modality: str, *,
                batch_size: int | None = None, show_progress: bool = False, threads: int = 4) -> np.ndarray:
        """Features of images of one modality, as the test protocol computes them.

        Args:
            images: image file paths (str / Path), PIL images, uint8 (H, W, 3) arrays, a
                mixed sequence of those, or a uint8 (B, H, W, 3) RGB array / tensor (0-255);
                one path or PIL image alone is a batch of one. Any size: pictures are
                resized to the checkpoint's (H, W) with Lanczos, as the array cache; already
                at (H, W), their pixels are used as they are.
            modality: "visible" / "vis" or "infrared" / "ir": which stream embeds them.
            batch_size: images per forward pass (default the extractor's).
            show_progress: a progress bar on stderr.
            threads: decoding threads.

        Returns:
            float32 (B, D) NumPy array, rows of unit L2 norm, in input order; the cosine
            similarity of two images is the inner product of their rows (the protocol's
            ranking: distance ``1 - q @ g.T``). (0, D) for no images.

        Raises:
            UserError: an unknown modality or one the checkpoint lacks; a file that is missing
                or cannot be decoded as an image (named).
            TypeError: an array that is not uint8, an item of an unknown type.
            ValueError: an array not (B, H, W, 3) / (H, W, 3).
        """
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start, feats in self.batches(images, modality, batch_size=batch_size, show_progress=show_progress, threads=threads):
            out[start : start + len(feats)] = feats
        return out


def _as_items(images, size: tuple[int, int]) -> Sequence:
    """A sequence of single images from any accepted input (a (B, H, W, 3) array stays an array)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy() if images.dtype == torch.uint8 else images
    if isinstance(images, torch.Tensor):
        raise TypeError(f"expected a uint8 image batch, got a {images.dtype} tensor")
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 RGB images 0-255, got {images.dtype}; convert with (x * 255).round().astype(np.uint8)")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected a uint8 (B, H, W, 3) RGB batch, got shape {images.shape}")
        return images
    return list(images)


def _to_pixels(item, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 (H, W, 3) at ``size`` (the array cache's decoding and resize)."""
    if isinstance(item, (str, Path)):
        return read_picture(Path(item), size)
    if isinstance(item, Image.Image):
        return image_to_array(item, size)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise TypeError(f"expected uint8 RGB images 0-255, got {item.dtype}")
        if item.ndim != 3 or item.shape[-1] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got shape {item.shape}")
        return item if item.shape[:2] == tuple(size) else image_to_array(Image.fromarray(item), size)
    raise TypeError(f"cannot read an image from a {type(item).__name__}; pass file paths, PIL images or uint8 arrays")


def read_picture(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A user's picture as uint8 (H, W, 3) at ``size``, decoded as :func:`common.data.images.read_image`.

    Raises:
        UserError: missing file, a folder, or a file that is not a decodable image (named).
    """
    try:
        with Image.open(path) as img:
            return image_to_array(img, size)
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; pass existing image files or folders") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; pass it as a folder of images (--images DIR), not as one image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise UserError(f"{path} cannot be read as an image ({reason}); remove it or pass only image files") from None


def list_images(sources: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """The image files named by ``sources``: files as given, folders searched recursively.

    In a folder, files whose names end in :data:`IMAGE_SUFFIXES` (any case) are images,
    sorted by path; other files are returned apart (the caller says it skipped them, by
    name). A file named directly is always taken, whatever its ending (it is refused later
    if it does not decode).

    Returns:
        (images, skipped): absolute paths.

    Raises:
        UserError: no sources, a missing path, or folders holding no image file.
    """
    if not sources:
        raise UserError("no images given; pass --images with image files or folders of images")
    images: list[Path] = []
    skipped: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            found = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise UserError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); pass a folder of images")
            images += [p.resolve() for p in found]
            skipped += [p.resolve() for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        elif path.is_file():
            images.append(path.resolve())
        else:
            raise UserError(f"{path} does not exist; pass image files or folders of images")
    return images, skipped


def extract_to_file(extractor: ReidExtractor, sources: Sequence[str | Path], modality: str, out: Path, *,
                    batch_size: int | None = None) -> dict[str, Any]:
    """``pipeline extract``: embed every image of ``sources`` and write a feature file.

    Every image is read; one that cannot be read stops the command with its name and
    nothing is written (files in a folder not named like images are skipped and listed).
    Features are streamed into the file batch by batch (bounded memory for any N).

    Returns:
        ``{"out", "count", "dim", "skipped": [paths], ...}`` plus :meth:`ReidExtractor.describe`.

    Raises:
        UserError: as :func:`list_images` and :meth:`ReidExtractor.extract`; ``out`` unwritable.
    """
    from pipelines.feature_file import write_feature_file

    stream = extractor.modality(modality)
    images, skipped = list_images(sources)
    meta = {**extractor.describe(), "modality": MODALITY_WORDS[stream]}
    blocks = (feats for _, feats in extractor.batches(images, stream, batch_size=batch_size, show_progress=True))
    write_feature_file(Path(out), blocks, [str(p) for p in images], meta)  # streamed: one batch in memory at a time
    return {**meta, "out": str(out), "count": len(images), "skipped": [str(p) for p in skipped]}
