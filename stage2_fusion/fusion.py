"""TSME stage 2 parts: pair-wise image fusion (PwIF) and identity-aware interaction (IAI).

Liu et al., TSME (IEEE TCSVT 2022); public code jnLreID/Revisiting-Modality-specific-
Feature-Compensation-for-Visible-Infrared-Person-Re-Identification:model.py at 99bc54c:

* **PwIF**: each image is processed together with its generated partner by a *real* and a
  *generated* stream; the real stream is gated after layer3 and layer4 by a parameter-free
  attention x * sigmoid(GAP(x) + GMP(x)) (``SEModule.forward``: its convolutions are never
  used), and the two layer4 maps are fused by averaging, F = (F_real + F_gen) / 2
  (element-wise, C x 18 x 9). The paper calls this image fusion; the code fuses features.
* **Heads**: F is cut into 6 horizontal stripes (average-pooled); each stripe gets a
  FeatureBlock (Linear C -> 512 + BatchNorm1d) and a ClassBlock (LeakyReLU 0.1, optional
  dropout, Linear 512 -> identities).
* **IAI**: 2-stripe heads on the real maps shared by both modalities (real visible and
  real infrared features pass the same head) and 2-stripe heads on the generated maps
  (generated infrared and generated visible): heads 7-10 of the code. Each head is trained
  with identity cross-entropy + 0.5 x hetero-centre loss on its L2-normalised embedding.

Stripes use adaptive average pooling over the height; with H divisible by the stripe
count (18 rows / 6 at 288 x 144) this equals the code's ``avg_pool2d`` exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def modality_gate(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free channel attention of TSME's real stream: x * sigmoid(GAP(x) + GMP(x)).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """
    return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True))


def pwif(feat_real: torch.Tensor, feat_gen: torch.Tensor) -> torch.Tensor:
    """PwIF fusion of the (gated) real and the generated layer4 maps: their mean.

    Shapes: two (B, C, H, W) -> (B, C, H, W).

    Raises:
        ValueError: if the shapes differ.
    """
    if feat_real.shape != feat_gen.shape:
        raise ValueError(f"PwIF needs equal shapes, got {tuple(feat_real.shape)} and {tuple(feat_gen.shape)}")
    return (feat_real + feat_gen) / 2


def stripes(x: torch.Tensor, n: int) -> torch.Tensor:
    """Average-pool a map into n horizontal stripes: (B, C, H, W) -> (B, n, C)."""
    return F.adaptive_avg_pool2d(x.float(), (n, 1)).squeeze(-1).transpose(1, 2)


class StripeHead(nn.Module):
    """One TSME part head: FeatureBlock (Linear + BN1d) then ClassBlock (LeakyReLU 0.1,
    dropout, Linear). Init as the code: Kaiming (fan_out) linear, BN weight N(1, 0.01),
    classifier N(0, 0.001), zero biases.

    Shapes:
        (B, C) -> (embedding (B, embed_dim), logits (B, num_classes)), float.
    """

    def __init__(self, in_channels: int, embed_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.feature = nn.Sequential(nn.Linear(in_channels, embed_dim), nn.BatchNorm1d(embed_dim))
        layers: list[nn.Module] = [nn.LeakyReLU(0.1)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(embed_dim, num_classes))
        self.classifier = nn.Sequential(*layers)
        nn.init.kaiming_normal_(self.feature[0].weight, a=0, mode="fan_out")
        nn.init.zeros_(self.feature[0].bias)
        nn.init.normal_(self.feature[1].weight, 1.0, 0.01)
        nn.init.zeros_(self.feature[1].bias)
        nn.init.normal_(self.classifier[-1].weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.feature(x)
        return embedding, self.classifier(embedding)


class StripeHeads(nn.Module):
    """n independent :class:`StripeHead` s, one per stripe of a map.

    Shapes:
        forward (B, C, H, W) -> (embeddings (n, B, embed_dim), logits (n, B, classes)).
    """

    def __init__(self, n: int, in_channels: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(StripeHead(in_channels, embed_dim, num_classes) for _ in range(n))

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = stripes(fmap, len(self.heads))  # (B, n, C)
        outs = [head(parts[:, i]) for i, head in enumerate(self.heads)]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])
