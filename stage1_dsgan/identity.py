"""Identity-aware translation (ours, after AlignGAN): re-ID losses on the translated images.

An unpaired GAN only matches distributions: any translation whose images look infrared
satisfies it, including one that gives a person's clothes the wrong near-infrared
brightness. A translation useful to re-ID must keep who is who. AlignGAN (Wang et al.,
"RGB-Infrared Cross-Modality Person Re-Identification via Joint Pixel and Feature
Alignment", ICCV 2019; wangguanan/AlignGAN ``core/train.py``) adds, to its RGB -> infrared
generator's CycleGAN objective, an identity classification loss and a triplet loss on the
generated infrared images, computed by the re-ID network. We do the same with our own
design choices, each an option measured against TSME's plain DSGAN:

* **one re-ID network per target modality** (:class:`ModalityReidNet`): ``reid_ir`` judges
  translations visible -> infrared, ``reid_vis`` translations infrared -> visible-gray. Each
  is a small ResNet of the generator encoder's size (started from the same weights as the
  encoder: ImageNet, or the demo's stand-in), GAP, a BNNeck (frozen-bias BatchNorm1d) and a
  bias-free classifier over the training identities;
* **trained first, on real images only, then frozen** (:func:`pretrain_reid_nets`):
  ``reid_pretrain_steps`` Adam steps on P x K batches of real images of its modality, in the
  GAN's input domain (gray in [-1, 1]), with the GAN's own augmentation (resize-and-crop,
  flip), loss = cross-entropy + batch-hard triplet. AlignGAN trains its re-ID network jointly
  with the generator, on real and generated images; a frozen network that has only seen
  real images cannot learn to accept a wrong translation, and keeps stage 1 independent of
  stage 2 (the stages never share a network);
* **the generator's re-ID loss** (:func:`identity_losses`): for a batch of P identities x K
  visible and K infrared training images (identity-aligned sampling, as JSIA-ReID's
  same-person pairs), each translation must be classified as its source image's identity by
  the target modality's network (cross-entropy), and in that network's L2-normalised feature
  space must lie closer to the real images of its identity than to any other identity's by
  a margin (:func:`cross_triplet`: the hardest positive and the hardest negative among the
  real images of the batch).

Shapes: images (B, 3, H, W) float in [-1, 1]; labels int64 (B,) class indices in
[0, num_classes).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.nets.resnet import STEM_AND_LAYERS, Stem, load_resnet_parts, make_layers, stage_channels

#: Adam learning rate of the re-ID networks' pre-training (the re-ID literature's Adam rate,
#: e.g. AlignGAN's 3.5e-4 for its re-ID network; weight decay 5e-4).
REID_LR = 3.5e-4
REID_WEIGHT_DECAY = 5e-4


class ModalityReidNet(nn.Module):
    """A small re-ID network for one modality: ResNet body, GAP, BNNeck, classifier.

    Args:
        base_width: stem width (the DSGAN encoder's, ``gan.base_width``).
        layers: bottlenecks per stage (``gan.encoder_layers``); layer4 has stride 1.
        num_classes: training identities.

    Shapes:
        ``forward(x)``: x (B, 3, H, W) float in [-1, 1] -> (features (B, 32 * base_width)
        float, pre-BN, logits (B, num_classes) float).
    """

    def __init__(self, base_width: int, layers: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.stem = Stem(base_width)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(base_width, tuple(layers), last_stride=1)
        channels = stage_channels(base_width)[3]
        self.bnneck = nn.BatchNorm1d(channels)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(channels, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))  # (B, 32w, H/16, W/16)
        f = f.mean(dim=(2, 3))  # GAP -> (B, 32w)
        return f, self.classifier(self.bnneck(f))

    def load_encoder_weights(self, spec: str) -> int:
        """Load the ResNet weights the DSGAN encoders start from (path, "imagenet" or "none");
        returns the number of tensors loaded."""
        return load_resnet_parts(self, spec, [STEM_AND_LAYERS], "re-ID network of stage 1")


def cross_triplet(anchors: torch.Tensor, anchor_labels: torch.Tensor, reals: torch.Tensor, real_labels: torch.Tensor,
                  margin: float) -> torch.Tensor:
    """Batch-hard triplet loss of anchors against another set (translations against real images).

    With unit features a_i = anchors_i / |anchors_i| and r_j likewise, d_ij = |a_i - r_j|:
    L = mean_i max(0, max_{j: y_j = y_i} d_ij - min_{j: y_j != y_i} d_ij + margin)
    (Hermans et al., "In Defense of the Triplet Loss", 2017, batch-hard mining, with the
    positives and negatives taken from ``reals`` only).

    Args:
        anchors: (B, D) float; anchor_labels: (B,) int64.
        reals: (N, D) float; real_labels: (N,) int64. Every anchor needs at least one real of
            its identity and one of another.
        margin: >= 0.

    Returns:
        scalar float tensor >= 0.

    Raises:
        ValueError: an anchor without a positive or without a negative among ``reals``.
    """
    same = anchor_labels[:, None] == real_labels[None, :]  # (B, N)
    if not bool(same.any(dim=1).all()) or bool(same.all(dim=1).any()):
        raise ValueError("cross_triplet: every anchor needs a real image of its identity and one of another identity")
    d = torch.cdist(F.normalize(anchors.float(), dim=1), F.normalize(reals.float(), dim=1))  # (B, N)
    hardest_positive = d.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = d.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def identity_losses(reid: ModalityReidNet, fakes: torch.Tensor, fake_labels: torch.Tensor, reals: torch.Tensor,
                    real_labels: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """The re-ID losses of translations into one modality, through that modality's frozen network.

    Args:
        reid: the target modality's :class:`ModalityReidNet` (eval mode, frozen; gradients flow
            through it into ``fakes``).
        fakes: (B, 3, H, W) translations in [-1, 1]; fake_labels: (B,) their source images' classes.
        reals: (N, 3, H, W) real images of the target modality in [-1, 1]; real_labels: (N,).
        margin: the triplet margin.

    Returns:
        ``{"ce": cross-entropy of the translations' logits, "triplet": cross_triplet of
        their features against the reals' (computed without gradient)}``, scalars.
    """
    feat_fake, logits = reid(fakes)
    with torch.no_grad():
        feat_real, _ = reid(reals)
    return {"ce": F.cross_entropy(logits.float(), fake_labels),
            "triplet": cross_triplet(feat_fake, fake_labels, feat_real, real_labels, margin)}


def identity_batch(rng: np.random.Generator, vis_by_class: list[np.ndarray], ir_by_class: list[np.ndarray],
                   ids_per_batch: int, images_per_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An identity-aligned GAN batch: P classes, K visible and K infrared rows of each.

    Args:
        rng: the step's generator.
        vis_by_class, ir_by_class: per class, the training-split rows of each modality (classes
            with images of both modalities only).
        ids_per_batch: P (>= 2, so that every anchor has a negative).
        images_per_id: K, drawn with replacement.

    Returns:
        (visible rows (P K,), infrared rows (P K,), classes (P K,)), int64, grouped by class.
    """
    classes = rng.choice(len(vis_by_class), ids_per_batch, replace=False)
    vis = np.concatenate([rng.choice(vis_by_class[c], images_per_id) for c in classes])
    ir = np.concatenate([rng.choice(ir_by_class[c], images_per_id) for c in classes])
    return vis.astype(np.int64), ir.astype(np.int64), np.repeat(classes, images_per_id).astype(np.int64)
