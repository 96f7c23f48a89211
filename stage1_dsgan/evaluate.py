"""Translation quality on aligned visible/infrared pairs (e.g. RoadScene, FusionDN AAAI 2020).

For each held-out pair, the visible image is translated to infrared by ``g_vis2ir`` and
compared with the real, pixel-aligned infrared image; the trivial baseline compares the
visible image's BT.601 grayscale with it. Both are scored at the generator's image size,
on one luminance channel in [0, 1]:

* L1: mean absolute difference (0-1 scale; lower is better);
* PSNR: ``kornia.metrics.psnr`` with max value 1, in dB, averaged over images;
* SSIM: ``kornia.metrics.ssim`` with an 11 x 11 Gaussian window, averaged over pixels and
  images (Wang et al., IEEE TIP 2004);
* two-sample: the classifier two-sample test (:func:`stage1_dsgan.realism.two_sample_score`)
  of the translations against real images of the target domain, which needs no alignment:
  held-out accuracy, 0.5 = indistinguishable, 1.0 = always told apart; visible -> infrared
  (``vis2ir``) and infrared -> visible-gray (``ir2vis``). The baseline's figure treats the
  untranslated gray image as the translation.

:func:`evaluate_gan_on_split` scores the two-sample test alone on any dataset's training
split (no aligned pairs needed), on the images the GAN held out for choosing its epoch.

What a partner carries for re-ID, without any network (:func:`partner_rank1`): every real
infrared image of a set of identities is a query against the visible images of the same
identities, each represented by its partner (the translation, its gray copy, or its aligned
twin); person-centred 24 x 8 gray thumbnails, mean-centred and L2-normalised, are ranked by
cosine, and Rank-1 is the percentage of queries whose nearest thumbnail shows their
identity. :class:`PartnerProbe` scores a generator this way and against the aligned twins
(L1, PSNR, SSIM) on identities it never trained on, every ``gan.monitor_every`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch

from common.data.augment import from_gan_domain, to_float_images
from common.datasets.pairs import aligned_pairs, split_pairs
from common.errors import UserError
from common.data.images import BT601, read_image, to_grayscale_bt601
from stage1_dsgan.generate import load_generators, make_translator
from stage1_dsgan.realism import two_sample_score
from stage1_dsgan.select import held_out_indices


#: The person-centred crop of :func:`partner_thumbnails`: rows 10-95 %, columns 25-75 % of the image.
THUMBNAIL_CROP = ((0.10, 0.95), (0.25, 0.75))
THUMBNAIL_SIZE = (24, 8)  # (H, W) pixels
_LUMA_WEIGHTS = np.array(BT601, np.float32)


def _scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """pred, target: (N, 1, H, W) float in [0, 1] -> mean L1, PSNR (dB), SSIM."""
    l1 = (pred - target).abs().mean().item()
    psnr = torch.stack([kornia.metrics.psnr(pred[i : i + 1], target[i : i + 1], 1.0) for i in range(len(pred))]).mean().item()
    ssim = kornia.metrics.ssim(pred, target, window_size=11, max_val=1.0).mean().item()
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def _luma(images_u8: np.ndarray) -> torch.Tensor:
    x = to_float_images(torch.from_numpy(images_u8), torch.device("cpu"))
    return kornia.color.rgb_to_grayscale(x)  # (N, 1, H, W) in [0, 1]


@torch.no_grad()
def evaluate_gan(checkpoint: Path, data_root: Path, device: torch.device, *, held_out_only: bool = True, batch_size: int = 16) -> dict[str, Any]:
    """Score a DSGAN's visible -> infrared translation against real aligned infrared images.

    Args:
        checkpoint: ``gan.pt``.
        data_root: folder with ``visible/`` and ``infrared/`` (matched by file name).
        device: where the generator runs.
        held_out_only: score only the held-out pairs of the deterministic split
            (:func:`common.datasets.pairs.split_pairs`); False scores all pairs.

    Returns:
        ``{"model": {"l1", "psnr", "ssim", "two_sample_vis2ir", "two_sample_ir2vis"},
        "baseline": {...}, "pairs": N, "image_size": [H, W]}``.

    Raises:
        UserError: missing/invalid checkpoint or folder, no pairs to score.
    """
    pairs = aligned_pairs(Path(data_root))
    if held_out_only:
        pairs = split_pairs(pairs)[1]
    if not pairs:
        raise UserError(f"{data_root} has no held-out pairs to score; use --split all")
    return evaluate_gan_pairs(checkpoint, [(v, i) for _, v, i in pairs], device, batch_size=batch_size)


@torch.no_grad()
def evaluate_gan_pairs(checkpoint: Path, pairs: list[tuple[Path, Path]], device: torch.device, *, batch_size: int = 16,
                       probe: "PartnerProbe | None" = None) -> dict[str, Any]:
    """Score a DSGAN on (visible image, pixel-aligned real infrared image) file pairs: an
    aligned folder's, or the demo's visible images with their ``aligned_nir`` twins (same
    scene rendered in near-infrared, :mod:`common.demo`).

    Args:
        probe: the same visible images with identities and real infrared queries (the demo's
            test split, :func:`pipelines.stages.partner_probe`): adds the partners' raw-pixel
            Rank-1 (:func:`partner_rank1`) to ``model`` and ``baseline``, and the twins' own
            scores as ``twin`` (the oracle).

    Returns:
        As :func:`evaluate_gan` (plus ``twin`` with a probe).

    Raises:
        UserError: missing/invalid checkpoint, unreadable images, no pairs.
    """
    if not pairs:
        raise UserError("no aligned pairs to score")
    gens = load_generators(checkpoint, device)
    pairs = [("", v, i) for v, i in pairs]
    size = tuple(gens.image_size)
    vis = np.stack([read_image(v, size) for _, v, _ in pairs])
    ir = np.stack([read_image(i, size) for _, _, i in pairs])
    translate = make_translator(gens, device)
    fake_ir = _translate_all(translate, vis, is_ir=False, batch_size=batch_size)
    fake_vis = _translate_all(translate, ir, is_ir=True, batch_size=batch_size)
    target = _luma(ir)
    model, baseline = _scores(_luma(fake_ir), target), _scores(_luma(vis), target)
    model.update(_two_sample(vis, ir, fake_ir, fake_vis))
    baseline.update(_two_sample(vis, ir, to_grayscale_bt601(vis), ir))
    result = {"model": model, "baseline": baseline, "pairs": len(pairs), "image_size": list(size), "checkpoint": str(checkpoint)}
    if probe is not None:
        if len(probe.visible) != len(vis):
            raise ValueError(f"the probe holds {len(probe.visible)} visible images, the pairs {len(vis)}: they must be the same images")
        model["partner_rank1"] = probe.score_partners(fake_ir)["partner_rank1"]
        baseline["partner_rank1"] = probe.score_partners(to_grayscale_bt601(vis))["partner_rank1"]
        result["twin"] = probe.score_partners(ir)
    return result


def _translate_all(translate, images: np.ndarray, *, is_ir: bool, batch_size: int) -> np.ndarray:
    return np.concatenate([
        translate(torch.from_numpy(np.ascontiguousarray(images[b : b + batch_size])),
                  torch.full((len(images[b : b + batch_size]),), is_ir, dtype=torch.bool)).numpy()
        for b in range(0, len(images), batch_size)
    ])


def _two_sample(vis: np.ndarray, ir: np.ndarray, fake_ir: np.ndarray, fake_vis: np.ndarray) -> dict[str, float]:
    """Two-sample accuracies: translated visible vs real infrared, translated infrared vs real visible-gray."""
    return {"two_sample_vis2ir": two_sample_score(ir, fake_ir)["accuracy"],
            "two_sample_ir2vis": two_sample_score(to_grayscale_bt601(vis), fake_vis)["accuracy"]}


@torch.no_grad()
def evaluate_gan_on_split(checkpoint: Path, split, device: torch.device, *, batch_size: int = 64) -> dict[str, Any]:
    """The two-sample test of a DSGAN on a dataset's training split (no aligned pairs needed).

    Scores the images the GAN held out of training to choose its epoch (the same seeded
    subset, from the checkpoint's ``gan.seed`` and ``gan.select_images``); the baseline
    takes the untranslated gray image as the translation.

    Args:
        split: the training split at the generator's image size
            (:class:`common.data.array_cache.ArraySplit`).

    Returns:
        ``{"model": {"two_sample_vis2ir", "two_sample_ir2vis"}, "baseline": {...},
        "images": {"vis": n, "ir": m}, "image_size": [H, W]}``.

    Raises:
        UserError: a split at another size than the generator's, or too few images.
    """
    from common.checkpoint import load_checkpoint

    gens = load_generators(checkpoint, device)
    if tuple(split.images.shape[1:3]) != tuple(gens.image_size):
        raise UserError(f"the split is at {split.images.shape[1]}x{split.images.shape[2]}, the generator at "
                        f"{gens.image_size[0]}x{gens.image_size[1]}")
    gan = load_checkpoint(checkpoint, "dsgan")["gan"]
    held = held_out_indices(split.is_ir, gan.get("select_images", 200), gan.get("seed", 0))
    vis, ir = np.asarray(split.images[held[~split.is_ir[held]]]), np.asarray(split.images[held[split.is_ir[held]]])
    if min(len(vis), len(ir)) < 8:
        raise UserError(f"only {len(vis)} visible / {len(ir)} infrared held-out images: the two-sample test needs at least 8 of each")
    translate = make_translator(gens, device)
    fake_ir = _translate_all(translate, vis, is_ir=False, batch_size=batch_size)
    fake_vis = _translate_all(translate, ir, is_ir=True, batch_size=batch_size)
    return {"model": _two_sample(vis, ir, fake_ir, fake_vis), "baseline": _two_sample(vis, ir, to_grayscale_bt601(vis), ir),
            "images": {"vis": len(vis), "ir": len(ir)}, "image_size": list(gens.image_size), "checkpoint": str(checkpoint)}


# ----------------------------------------------------------------------------- partners for re-ID


def partner_thumbnails(images: np.ndarray) -> np.ndarray:
    """Person-centred gray thumbnails for raw-pixel matching.

    Each image's BT.601 luma is cropped to :data:`THUMBNAIL_CROP` (the person, without most
    of the background), resized bilinearly to :data:`THUMBNAIL_SIZE` (24 x 8), flattened,
    mean-centred and L2-normalised, so that the dot product of two thumbnails is the cosine
    of their centred pixels (a normalised cross-correlation).

    Args:
        images: uint8 (N, H, W, 3).

    Returns:
        float32 (N, 192), unit rows (all-zero rows stay zero).
    """
    from PIL import Image

    (r0, r1), (c0, c1) = THUMBNAIL_CROP
    th, tw = THUMBNAIL_SIZE
    out = np.empty((len(images), th * tw), np.float32)
    for i, img in enumerate(images):
        lum = img.astype(np.float32) @ _LUMA_WEIGHTS  # (H, W)
        h, w = lum.shape
        person = Image.fromarray(lum[int(r0 * h): int(r1 * h), int(c0 * w): int(c1 * w)].astype(np.uint8))
        out[i] = np.asarray(person.resize((tw, th), Image.BILINEAR), np.float32).ravel()
    out -= out.mean(axis=1, keepdims=True)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def partner_rank1(query: np.ndarray, query_pids: np.ndarray, gallery: np.ndarray, gallery_pids: np.ndarray) -> float:
    """Raw-pixel Rank-1 in percent: how often a query's most similar gallery thumbnail has its identity.

    Args:
        query: float32 (M, D) unit rows (:func:`partner_thumbnails` of the real infrared queries).
        query_pids: (M,) identities. gallery: float32 (N, D) unit rows (of the partners).
        gallery_pids: (N,) identities.

    Returns:
        float in [0, 100]; chance is 100 / #identities. Ties go to the first gallery row.
    """
    return float(100.0 * np.mean(gallery_pids[np.argmax(query @ gallery.T, axis=1)] == query_pids))


def aligned_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """L1, PSNR and SSIM of images against their pixel-aligned targets, on luminance in [0, 1].

    Args:
        pred, target: uint8 (N, H, W, 3), same shape (e.g. translations and aligned twins).

    Returns:
        ``{"l1": mean |pred - target| in [0, 1], "psnr": mean per-image PSNR in dB,
        "ssim": mean SSIM (11 x 11 Gaussian window)}``.
    """
    return _scores(_luma(np.ascontiguousarray(pred)), _luma(np.ascontiguousarray(target)))


@dataclass(frozen=True)
class PartnerProbe:
    """Identities a generator never trained on, with aligned twins: what its partners carry.

    Attributes:
        visible: uint8 (N, H, W, 3) visible images (translated to infrared when scored).
        twins: uint8 (N, H, W, 3) their aligned infrared twins (the same scene seen by the
            infrared camera; the demo's ``aligned_nir/``).
        visible_pids: (N,) identities of ``visible``.
        infrared: uint8 (M, H, W, 3) real infrared images of the same identities (the queries).
        infrared_pids: (M,) their identities.
    """

    visible: np.ndarray
    twins: np.ndarray
    visible_pids: np.ndarray
    infrared: np.ndarray
    infrared_pids: np.ndarray

    @cached_property
    def query_thumbnails(self) -> np.ndarray:
        return partner_thumbnails(self.infrared)

    def score_partners(self, partners: np.ndarray) -> dict[str, float]:
        """L1 / PSNR / SSIM of ``partners`` (uint8 (N, H, W, 3), one per visible image)
        against the twins, and their raw-pixel Rank-1 (``partner_rank1``) as the gallery."""
        return {**aligned_scores(partners, self.twins),
                "partner_rank1": partner_rank1(self.query_thumbnails, self.infrared_pids, partner_thumbnails(partners),
                                               self.visible_pids)}

    def baselines(self) -> dict[str, dict[str, float]]:
        """The same scores for the gray copy (what ``tsme-gray`` pairs with) and for the twins
        themselves (the oracle: L1 0, Rank-1 the upper bound of any partner)."""
        return {"gray": self.score_partners(to_grayscale_bt601(self.visible)), "twin": self.score_partners(self.twins)}

    @torch.no_grad()
    def score_generator(self, g_vis2ir: torch.nn.Module, device: torch.device, batch_size: int = 128) -> dict[str, float]:
        """Translate :attr:`visible` with ``g_vis2ir`` (eval mode, its own input,
        :meth:`stage1_dsgan.networks.DSGANGenerator.prepare`) and :meth:`score_partners`;
        the generator's train/eval mode is restored."""
        was_training = g_vis2ir.training
        g_vis2ir.eval()
        try:
            fake = [from_gan_domain(g_vis2ir(g_vis2ir.prepare(to_float_images(torch.from_numpy(
                np.ascontiguousarray(self.visible[b: b + batch_size])), device)))).numpy()
                for b in range(0, len(self.visible), batch_size)]
        finally:
            g_vis2ir.train(was_training)
        return self.score_partners(np.concatenate(fake))
