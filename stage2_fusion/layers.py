"""Layers of the AGW re-ID baseline: non-local block, GeM pooling, BNNeck.

Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021
(AGW), Sec. 4.1; public code mangye16/Cross-Modal-Re-ID-baseline:model.py (``Non_local``,
``GeM`` pooling inside ``embed_net``, ``bottleneck`` BN with frozen bias, bias-free
classifier).
"""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian-free non-local block with a residual connection (Wang et al.,
    CVPR 2018, Eq. 1-2, the "dot product" form used by AGW).

    z = x + W(y),  y_i = (1/N) sum_j (theta(x_i)^T phi(x_j)) g(x_j),  N = H * W.

    theta, phi, g are 1x1 convolutions to ``inter_channels``; W is a 1x1 convolution back to
    C followed by BatchNorm initialised to zero, so the block starts as the identity.

    Args:
        channels: C.
        inter_channels: width of theta/phi/g. AGW's released code computes
            ``reduc_ratio // reduc_ratio`` = 1 (an accident its author acknowledged,
            mangye16/ReID-Survey issue 7); we default to 1 to reproduce its numbers, and
            0 selects C // 2, the width the non-local paper and the AGW text intend.

    Shapes:
        (B, C, H, W) -> (B, C, H, W), float.
    """

    def __init__(self, channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        inter = inter_channels if inter_channels > 0 else channels // 2
        self.inter_channels = inter
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (B, N, i)
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, i)
        phi_x = self.phi(x).flatten(2)  # (B, i, N)
        f = torch.bmm(theta_x, phi_x) / (h * w)  # (B, N, N)
        # contiguous (B, i, H, W) as the reference's ``.contiguous().view``: W's convolution then
        # sees the same memory layout and rounds the same (benchmarks/fidelity.py compares them)
        y = torch.bmm(f, g_x).transpose(1, 2).contiguous().view(b, self.inter_channels, h, w)  # (B, i, H, W)
        return x + self.W(y)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al., TPAMI 2019), p fixed as in AGW.

    f_c = (mean_{h,w} x_{c,h,w}^p + 1e-12)^(1/p); p = 1 is average pooling, p -> inf max
    pooling. Inputs are post-ReLU (>= 0).

    Shapes:
        (B, C, H, W) -> (B, C), float.
    """

    def __init__(self, p: float = 3.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed as m * (mean((x/m)^p) + eps/m^p)^(1/p) with m the per-channel maximum:
        # the same value as AGW's (mean(x^p) + eps)^(1/p), without x^p overflowing float32.
        x = x.float().flatten(2)  # (B, C, H*W)
        eps = 1e-12
        m = x.amax(dim=-1, keepdim=True).clamp_min(eps ** (1.0 / self.p))
        scaled = (x / m).pow(self.p).mean(dim=-1) + eps / m.squeeze(-1).pow(self.p)
        return m.squeeze(-1) * scaled.pow(1.0 / self.p)  # (B, C)


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen zero bias, then a bias-free identity classifier
    (Luo et al., "Bag of Tricks", CVPRW 2019; AGW ``bottleneck`` + ``classifier``).

    The triplet (WRT) loss sees the feature before the BN (``feat_pre_bn``), the identity
    loss the logits of the feature after it (``feat_post_bn``).

    Args:
        channels: feature width C.
        num_classes: training identities.

    Shapes:
        forward (B, C) -> (feat_post_bn (B, C), logits (B, num_classes)), float.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)
        self.bn.bias.requires_grad_(False)  # frozen at 0
        nn.init.normal_(self.bn.weight, 1.0, 0.01)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(channels, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)

    def forward(self, feat_pre_bn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat_post_bn = self.bn(feat_pre_bn.float())
        return feat_post_bn, self.classifier(feat_post_bn)
