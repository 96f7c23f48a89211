"""Translation realism without aligned pairs: a classifier two-sample test (C2ST).

Source: Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017, Section 3
(paper source: lopezpaz/classifier_tests:classifier_tests.tex, commit 5f36e05). Label the
real images 1 and the generated ones 0, split the pooled set into disjoint training and
held-out parts, train a binary classifier on the first, and report its accuracy on the
second (their Eq. 1). If the generator's images follow the real distribution the task is
impossible and the held-out accuracy stays near 1/2; the further it departs from 1/2 towards
1, the more of the held-out images the classifier tells apart. Under the null hypothesis
(same distribution) ``n_test * accuracy`` is Binomial(n_test, 1/2) (their Section 3.1),
which gives the one-sided p-value reported here.

How we run it (choices are ours, for cost): both sets are reduced to one luminance channel
in [0, 1] (the DSGAN works on visible *grayscale* and infrared, so colour carries nothing
here), images larger than :data:`MAX_SIDE` pixels on a side are shrunk by area
interpolation, and the classifier is a small convolutional network (about 6,000 weights)
trained from scratch with Adam for a few epochs. The paper's GAN experiments instead
classify features of a pretrained ResNet; we have no such weights offline.

Limits: the classifier detects only what it can learn from a few hundred images in a few
epochs; an accuracy near 0.5 can also mean too little data or too weak a classifier, not a
perfect generator, so always read it with ``n_test`` (the null's standard deviation is
``1 / (2 sqrt(n_test))``, about 0.065 for 60 held-out images) and the p-value.
"""

from __future__ import annotations

import math
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_SIDE = 128  # images with a longer side are area-downsampled to this side
MIN_IMAGES = 8  # fewest images per set
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
DEFAULT_EPOCHS = 12


class _C2STNet(nn.Module):
    """Small CNN: 3 stride-2 3x3 convs (1 -> 8 -> 16 -> 32), global mean+max pool, linear.

    (B, 1, H, W) float in [0, 1] -> (B,) logit of "real". 5,993 parameters. No batch norm,
    so a prediction depends on its image alone (identical images get identical scores).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x * 2.0 - 1.0)  # (B, 1, H, W) -> (B, 32, H/8, W/8)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)  # (B, 64)
        return self.head(pooled).squeeze(1)  # (B,)


def _to_luminance(images: Any) -> torch.Tensor:
    """Bring an image set to one luminance channel in [0, 1] (full size; see :func:`_shrink`).

    Accepted (numpy arrays or tensors):

    * uint8 (N, H, W, 3), 0-255 (the pipeline's layout): BT.601 luma
      L = 0.299 R + 0.587 G + 0.114 B (``kornia.color.rgb_to_grayscale``), / 255;
    * uint8 (N, H, W), 0-255: / 255;
    * float (N, 1, H, W) or (N, 3, H, W) in [0, 1]: kept, or BT.601 luma of the 3 channels.

    Returns:
        float32 (N, 1, H, W) in [0, 1], on the input's device.

    Raises:
        TypeError: not an array/tensor, or a dtype other than uint8/floating.
        ValueError: any other shape, or float values outside [0, 1].
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a numpy array or torch tensor of images, got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dtype == torch.uint8:
        if images.ndim == 4 and shape[-1] == 3:
            x = kornia.color.rgb_to_grayscale(images.permute(0, 3, 1, 2).float() / 255.0)  # (N, H, W, 3) -> (N, 1, H, W)
        elif images.ndim == 3:
            x = images.unsqueeze(1).float() / 255.0  # (N, H, W) -> (N, 1, H, W)
        else:
            raise ValueError(f"uint8 images must be (N, H, W, 3) or (N, H, W), got {shape}")
    elif images.is_floating_point():
        if images.ndim != 4 or shape[1] not in (1, 3):
            raise ValueError(f"float images must be (N, 1, H, W) or (N, 3, H, W), got {shape}")
        x = images.float()
        if x.numel() and (x.amin() < 0 or x.amax() > 1):
            raise ValueError(f"float images must lie in [0, 1], got [{x.amin().item():.3g}, {x.amax().item():.3g}]")
        if shape[1] == 3:
            x = kornia.color.rgb_to_grayscale(x)  # (N, 3, H, W) -> (N, 1, H, W)
    else:
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return x


def _shrink(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, H', W'): if max(H, W) > MAX_SIDE, area interpolation (each output
    pixel is the mean of the source pixels it covers) to (round(H s), round(W s)) with
    s = MAX_SIDE / max(H, W); else unchanged."""
    height, width = x.shape[-2:]
    if max(height, width) <= MAX_SIDE:
        return x.contiguous()
    scale = MAX_SIDE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x, size=size, mode="area")


def split_for_score(n: int, held_out: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of positions 0..n-1 into training and held-out indices.

    The held-out part has ``round(held_out * n)`` positions, clamped to [1, n - 1] so that
    both parts are non-empty. :func:`two_sample_score` applies the same split to the real
    and the generated set (equal sizes), so each class keeps the same held-out fraction.

    Args:
        n: number of images per set, >= 2.
        held_out: fraction in (0, 1) to hold out.
        seed: seeds a private ``torch.Generator`` (the global RNG is untouched).

    Returns:
        (train_idx, test_idx): int64 tensors, disjoint, together a permutation of 0..n-1.

    Raises:
        ValueError: n < 2 or held_out outside (0, 1).
    """
    if n < 2:
        raise ValueError(f"need n >= 2 to split, got {n}")
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must lie in (0, 1), got {held_out}")
    n_test = min(max(round(held_out * n), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:], order[:n_test]


def _roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative) + P(tie) / 2.

    Mann-Whitney form, with tied scores given their average rank. scores: (M,) float;
    labels: (M,) bool, True = positive, both classes present.
    """
    scores, labels = scores.double().cpu(), labels.bool().cpu()
    values, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts + 1  # 1-based rank of each distinct value's first copy
    mean_rank = first_rank + (counts - 1) / 2.0  # (V,) average rank over the tied copies
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    rank_sum = mean_rank[inverse][labels].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact (integer arithmetic)."""
    return sum(math.comb(n, j) for j in range(max(k, 0), n + 1)) / 2**n


def two_sample_score(real: Any, generated: Any, *, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
                     held_out: float = 0.3, device: torch.device | str | None = None) -> dict[str, Any]:
    """Classifier two-sample test of generated images against real ones (C2ST, see module doc).

    Steps: (1) both sets to luminance (:func:`_to_luminance`), shrunk by area
    interpolation to at most :data:`MAX_SIDE` pixels a side (:func:`_shrink`); (2) balance: if one set is
    larger, a seeded random subset of it of the smaller set's size n is kept, so chance is
    exactly 1/2; (3) :func:`split_for_score` holds out the same positions of both sets;
    (4) a small CNN (:class:`_C2STNet`) learns real (label 1) vs generated (label 0) with
    Adam (lr 3e-3, batch 32, binary cross-entropy) for ``epochs`` epochs; (5) it scores the
    held-out images: a logit > 0 says "real".

    Deterministic given ``seed`` on CPU: the network is initialised and the batches are
    shuffled from private seeded generators, so the caller's global RNG state is neither
    used nor changed. On CUDA, cuDNN's non-deterministic kernels may change the last digits.
    Runs with gradients enabled even inside ``torch.no_grad``/``inference_mode``.

    Cost: one forward/backward per training image per epoch on at most 128 x 128 inputs.
    200 real + 200 generated images at 96 x 48, 12 epochs: about 1-2 s on a 2-core CPU.

    Args:
        real: real images of the target domain, uint8 (N, H, W, 3) / (N, H, W) or float
            (N, C, H, W) in [0, 1], C = 1 or 3 (:func:`_to_luminance`).
        generated: the generator's images, same accepted forms and the same (H, W).
        seed: seeds the balancing subset, the split, the initial weights and the shuffling.
        epochs: training epochs, >= 1.
        held_out: fraction of each set held out for scoring, in (0, 1).
        device: where the classifier trains; None = the device of ``real`` (CPU for numpy).

    Returns:
        ``{"accuracy": float in [0, 1]`` (held-out accuracy: 0.5 = indistinguishable, 1.0 =
        always told apart; below 0.5 is noise), ``"auc"``: ROC AUC of the held-out "real"
        scores (0.5 = chance), ``"p_value"``: P(accuracy >= observed | same distribution),
        one-sided, from Binomial(n_test, 1/2), ``"n_train"``, ``"n_test"``: images in each
        part, both classes together (n_test / 2 of each), ``"epochs"``: int}``.

    Raises:
        TypeError, ValueError: as :func:`_to_luminance`; fewer than ``MIN_IMAGES`` images in a
        set, image sizes that differ between the sets, epochs < 1, held_out outside (0, 1).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must lie in (0, 1), got {held_out}")
    if device is None:
        device = real.device if isinstance(real, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    x_real, x_gen = _to_luminance(real), _to_luminance(generated)  # (N, 1, H, W) each
    if len(x_real) < MIN_IMAGES or len(x_gen) < MIN_IMAGES:
        raise ValueError(f"need at least {MIN_IMAGES} images per set, got {len(x_real)} real and {len(x_gen)} generated")
    if x_real.shape[-2:] != x_gen.shape[-2:]:
        raise ValueError(f"real and generated images differ in size: {tuple(real.shape)} vs {tuple(generated.shape)}")
    x_real, x_gen = _shrink(x_real.to(device)), _shrink(x_gen.to(device))  # longest side <= MAX_SIDE

    gen = torch.Generator().manual_seed(seed)
    n = min(len(x_real), len(x_gen))
    x_real = x_real[torch.randperm(len(x_real), generator=gen)[:n].to(device)] if len(x_real) > n else x_real
    x_gen = x_gen[torch.randperm(len(x_gen), generator=gen)[:n].to(device)] if len(x_gen) > n else x_gen
    train_idx, test_idx = (i.to(device) for i in split_for_score(n, held_out, seed))
    x_train = torch.cat([x_real[train_idx], x_gen[train_idx]])  # (2 n_tr, 1, H, W)
    y_train = torch.cat([torch.ones(len(train_idx)), torch.zeros(len(train_idx))]).to(device)
    x_test = torch.cat([x_real[test_idx], x_gen[test_idx]])  # (2 n_te, 1, H, W)
    y_test = torch.cat([torch.ones(len(test_idx)), torch.zeros(len(test_idx))]).to(device)

    with torch.inference_mode(False), torch.enable_grad():
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`, caller's RNG restored
            torch.manual_seed(seed)
            net = _C2STNet()
        net = net.to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        x_train, y_train = x_train.clone(), y_train.clone()  # normal tensors even if made under inference_mode
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=gen).to(device)
            for start in range(0, len(order), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
                loss = F.binary_cross_entropy_with_logits(net(x_train[batch]), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    with torch.no_grad():
        logits = net(x_test)  # (2 n_te,)
    correct = int(((logits > 0).float() == y_test).sum().item())
    n_test = len(y_test)
    return {
        "accuracy": correct / n_test,
        "auc": _roc_auc(logits, y_test > 0.5),
        "p_value": _binomial_tail(n_test, correct),
        "n_train": len(y_train),
        "n_test": n_test,
        "epochs": epochs,
    }
