"""Batched augmentation on the training device (kornia), from uint8 batches.

Workers only slice uint8 arrays; conversion to float, normalisation and augmentation run
here, on whole batches, on the GPU when there is one (STYLE.md section 7).

Re-ID training recipe (AGW, mangye16/Cross-Modal-Re-ID-baseline:train.py): zero-pad 10 +
random crop back to (H, W), horizontal flip p = 0.5, ImageNet normalisation; optional
random erasing (Zhong et al., AAAI 2020) and CAJ channel augmentation (Ye et al., ICCV
2021: random channel exchange of visible images). An image and its generated partner are
augmented *jointly* (stacked along channels) so that they stay pixel-aligned, as TSME
translates the already-augmented image.
"""

from __future__ import annotations

import kornia
import kornia.augmentation as KA
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_images(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1] on ``device`` (channels_last).

    Raises:
        TypeError: if ``batch`` is not uint8. ValueError: if not (B, H, W, 3).
    """
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image batch, got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3), got {tuple(batch.shape)}")
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std with ImageNet statistics; x (B, 3, H, W) float in [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def to_gan_domain(x: torch.Tensor) -> torch.Tensor:
    """DSGAN input: BT.601 grayscale replicated to 3 channels, scaled to [-1, 1].

    Args:
        x: (B, 3, H, W) float in [0, 1], RGB or infrared.

    Returns:
        (B, 3, H, W) float in [-1, 1], three equal channels.
    """
    gray = kornia.color.rgb_to_grayscale(x)  # 0.299 R + 0.587 G + 0.114 B, (B, 1, H, W)
    return gray.expand(-1, 3, -1, -1).mul(2.0).sub(1.0).contiguous()


def from_gan_domain(y: torch.Tensor) -> torch.Tensor:
    """Generator output (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), 0-255, on CPU."""
    return y.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


class ReidTrainAugment(nn.Module):
    """Pad + random crop, horizontal flip, normalise, optional erasing: one call per batch.

    Args:
        size: (H, W) of the images.
        pad: zero padding before the random crop (AGW: 10; 0 disables the crop).
        flip_p: horizontal flip probability.
        erasing_p: random erasing probability (applied after normalisation with value 0,
            i.e. the ImageNet mean colour; 0 disables it).
        channel_aug: CAJ random channel exchange on visible images (p = 0.5).
        gray_mix_p: probability that a visible image is replaced by a random projection of
            its RGB channels (see :func:`random_gray_mix`); 0 disables it.

    Shapes:
        ``forward(images, partners=None, is_visible=None)``: images (B, 3, H, W) float in
        [0, 1]; optional partners of the same shape receive the same crop, flip and
        erasing; returns (images, partners) normalised with ImageNet statistics.
    """

    def __init__(self, size: tuple[int, int], pad: int = 10, flip_p: float = 0.5, erasing_p: float = 0.0, channel_aug: bool = False,
                 gray_mix_p: float = 0.0) -> None:
        super().__init__()
        geometric: list[nn.Module] = []
        if pad > 0:
            geometric.append(KA.RandomCrop(size, padding=pad, fill=0.0))
        if flip_p > 0:
            geometric.append(KA.RandomHorizontalFlip(p=flip_p))
        self.geometric = nn.Sequential(*geometric)
        self.erasing = KA.RandomErasing(p=erasing_p, value=0.0) if erasing_p > 0 else None
        self.channel_aug = channel_aug
        self.gray_mix_p = gray_mix_p

    @torch.no_grad()
    def forward(self, images: torch.Tensor, partners: torch.Tensor | None = None, is_visible: torch.Tensor | None = None):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        if self.channel_aug and is_visible is not None:
            images = _random_channel_exchange(images, is_visible)
        if self.gray_mix_p > 0 and is_visible is not None:
            images = random_gray_mix(images, is_visible, self.gray_mix_p)
        stacked = images if partners is None else torch.cat([images, partners], dim=1)  # (B, 3 or 6, H, W)
        stacked = self.geometric(stacked) if len(self.geometric) else stacked
        mean = stacked.new_tensor(IMAGENET_MEAN * (stacked.shape[1] // 3)).view(1, -1, 1, 1)
        std = stacked.new_tensor(IMAGENET_STD * (stacked.shape[1] // 3)).view(1, -1, 1, 1)
        stacked = (stacked - mean) / std
        if self.erasing is not None:
            stacked = self.erasing(stacked)
        stacked = stacked.contiguous(memory_format=torch.channels_last)
        if partners is None:
            return stacked, None
        return stacked[:, :3], stacked[:, 3:]


def _random_channel_exchange(images: torch.Tensor, is_visible: torch.Tensor) -> torch.Tensor:
    """CAJ channel exchange (Ye et al., ICCV 2021): with p = 0.5 a visible image becomes
    one of its R, G, B channels replicated to 3 channels; infrared images are unchanged."""
    batch = images.shape[0]
    pick = torch.randint(0, 3, (batch,), device=images.device)
    apply = (torch.rand(batch, device=images.device) < 0.5) & is_visible.to(images.device)
    chosen = images.gather(1, pick.view(batch, 1, 1, 1).expand(-1, 1, *images.shape[2:])).expand(-1, 3, -1, -1)
    return torch.where(apply.view(batch, 1, 1, 1), chosen, images)


def random_gray_mix(images: torch.Tensor, is_visible: torch.Tensor, p: float) -> torch.Tensor:
    """Random-projection grayscale of visible images (ours; extends CAJ's channel exchange).

    With probability ``p`` a visible image becomes g = w . (R, G, B) with w uniform in
    [-1, 1]^3 drawn per image, min-max rescaled to [0, 1] and replicated to 3 channels.
    CAJ (Ye et al., ICCV 2021) replaces an image by one of its 3 channels; a random
    projection gives every garment colour a random brightness, as infrared imaging gives
    every garment material a brightness unrelated to its colour, so the network cannot
    identify people by colour alone and must use shape and texture, which both modalities
    share. Infrared images are unchanged.

    Shapes: images (B, 3, H, W) float [0, 1], is_visible (B,) bool -> (B, 3, H, W) float [0, 1].
    """
    batch = images.shape[0]
    apply = (torch.rand(batch, device=images.device) < p) & is_visible.to(images.device)
    w = torch.rand(batch, 3, 1, 1, device=images.device) * 2 - 1
    gray = (images * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    lo, hi = gray.amin(dim=(2, 3), keepdim=True), gray.amax(dim=(2, 3), keepdim=True)
    gray = ((gray - lo) / (hi - lo).clamp_min(1e-6)).expand(-1, 3, -1, -1)
    return torch.where(apply.view(batch, 1, 1, 1), gray, images)
