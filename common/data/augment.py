"""Batched augmentation on the training device, from uint8 batches: every operation once.

Workers only slice uint8 arrays; conversion to float, normalisation and augmentation run
here, on whole batches, on the GPU when there is one (CONTRIBUTING.md, "Performance").

Re-ID training recipe (AGW, mangye16/Cross-Modal-Re-ID-baseline:train.py): zero-pad 10 +
random crop back to (H, W), horizontal flip p = 0.5, ImageNet normalisation; optional
random erasing (Zhong et al., AAAI 2020) and CAJ channel augmentation (Ye et al., ICCV
2021: random channel exchange of visible images). An image and its generated partner are
augmented *jointly* (stacked along channels) so that they stay pixel-aligned, as TSME
translates the already-augmented image (:class:`ReidTrainAugment`, kornia).

The per-image operations of CAJ's ``channel_aug.py`` (mangye16/Channel-Augmented-Joint-
Learning), which GLMN (cq0907/GFMNet) and MSCMNet (Hua-XC/MSCMNet) copy, are written once
below, on whole batches; where a paper's copy differs, the difference is a parameter (or,
for ChannelAdapGray, a function of its own name) citing its source:

| operation                  | function                  | used by                              |
|----------------------------|---------------------------|--------------------------------------|
| Pad + RandomCrop + flip    | :func:`pad_crop_flip`     | GLMN, MSCMNet views                  |
| ChannelRandomErasing       | :func:`random_erasing`    | GLMN, MSCMNet views                  |
| ChannelExchange(gray=2)    | :func:`channel_exchange`  | AGW/TSME ``channel_aug`` (p 0.5, visible only), GLMN, MSCMNet (p 1) |
| ChannelAdapGray (CAJ)      | :func:`adaptive_gray_caj` | GLMN infrared view                   |
| ChannelAdapGray (MSCMNet's edit) | :func:`adaptive_gray_mscmnet` | MSCMNet infrared view       |
| RandomGrayscale, ColorJitter(brightness), ChannelT | :func:`random_grayscale`, :func:`brightness_jitter`, :func:`channel_t` | MSCMNet views |
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import kornia.augmentation as KA
import torch
import torch.nn.functional as F
from torch import nn

from common.config import Recipe, probability
from common.data.images import BT601
from common.errors import UserError

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


#: Training views: "single" (one augmented view per image, the common augmentation) or "caj"
#: (CAJ's joint-learning layout, :class:`CajViews`: a plain and a channel-exchanged view of
#: every visible image and one infrared view).
VIEWS = ("single", "caj")


@dataclass(frozen=True)
class ColourRecipe(Recipe):
    """The recipe keys of the colour options, for the methods that offer them (AGW, MSO,
    TSME extend it).

    Attributes:
        channel_aug: CAJ's channel exchange on half of the visible images (Ye et al., ICCV
            2021; :func:`channel_exchange`, p 0.5; not in AGW's, MSO's or TSME's recipe: false).
        gray_mix_p: ours: probability that a visible image becomes a random grey projection
            (:func:`random_gray_mix`; 0 in both profiles).
        views: "single" (the paper's one view per image) or "caj" (CAJ's joint-learning
            views, :class:`CajViews`; ablation modifier ``caj``); with "caj" the views bring
            their own pad, crop, flip and CAJ's channel random erasing (``erasing_p``).
    """

    channel_aug: bool
    gray_mix_p: float = probability()
    views: str

    def check(self, where: str) -> None:
        super().check(where)
        if self.views not in VIEWS:
            raise UserError(f"{where}.views '{self.views}' is unknown; use {' or '.join(repr(v) for v in VIEWS)}")


def common_augment(size: tuple[int, int], recipe: Recipe) -> "ReidTrainAugment":
    """The common batched augmentation of a recipe: the shared geometric keys (``pad``,
    ``flip_p``, ``erasing_p``) and, for a :class:`ColourRecipe`, its colour options."""
    colour = isinstance(recipe, ColourRecipe)
    return ReidTrainAugment(size, recipe.pad, recipe.flip_p, recipe.erasing_p, recipe.channel_aug if colour else False,
                            recipe.gray_mix_p if colour else 0.0)


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
            images = channel_exchange(images, p=0.5, only=is_visible)
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


# --------------------------------------------------------------------------- CAJ's per-image operations, batched

#: CAJ ``ChannelRandomErasing(mean=...)`` fill per channel (channel_aug.py; GLMN and MSCMNet keep it).
CAJ_ERASE_FILL = (0.4914, 0.4822, 0.4465)
#: CAJ ``ChannelAdapGray`` grayscale weights (channel_aug.py: 0.2989 R + 0.587 G + 0.114 B).
CAJ_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def pad_crop_flip(images: torch.Tensor, pad: int, flip_p: float) -> torch.Tensor:
    """torchvision ``Pad(pad)`` (zeros) + ``RandomCrop((H, W))`` + ``RandomHorizontalFlip(flip_p)``,
    independently per image: crop offsets are uniform integers in [0, 2 pad] (rows and
    columns, both ends included), then a mirror with probability ``flip_p``.

    GLMN (cq0907/GFMNet ``data_loader0.py``) and MSCMNet (Hua-XC/MSCMNet ``build_transforms.py``)
    both take it from CAJ's transforms with pad 10 and flip 0.5. With ``pad <= 0`` and
    ``flip_p <= 0`` the batch is returned as it is and no random number is drawn.

    Shapes: (B, C, H, W) float -> (B, C, H, W).
    """
    b, _, h, w = images.shape
    if pad <= 0 and flip_p <= 0:
        return images
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images  # (B, C, H + 2p, W + 2p)
    top = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    left = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    rows = top.unsqueeze(1) + torch.arange(h, device=dev)  # (B, H)
    cols = left.unsqueeze(1) + torch.arange(w, device=dev)  # (B, W)
    flip = torch.rand(b, device=dev) < flip_p
    cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), cols.unsqueeze(1)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_erasing(images: torch.Tensor, p: float = 0.5, fill: tuple[float, float, float] = CAJ_ERASE_FILL,
                   area: tuple[float, float] = (0.02, 0.4), min_aspect: float = 0.3, attempts: int = 100) -> torch.Tensor:
    """CAJ ``ChannelRandomErasing`` (random erasing, Zhong et al., AAAI 2020), batched.

    With probability ``p`` per image: up to ``attempts`` draws of a target area uniform in
    ``area`` x H W and an aspect ratio uniform in [min_aspect, 1 / min_aspect]; the
    rectangle is h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)) (half to
    even, as Python's ``round``), accepted if h < H and w < W; the first accepted draw is
    placed at a uniform top-left corner (0 .. H - h, 0 .. W - w) and filled with ``fill``
    per channel; no accepted draw, no erasing. All draws are made at once and the first
    valid one taken: the code's loop, same distribution.

    ``fill`` is written as it is, in the units of the tensor: GLMN erases its plain visible
    view before normalising (so in [0, 1] units), the other views and MSCMNet's after it.
    An image stacked with its partner along the channels (B, 6, H, W) is erased in the same
    rectangle in both, ``fill`` repeated (TSME's partner stays pixel-aligned).

    Shapes: (B, 3k, H, W) float -> (B, 3k, H, W).

    Raises:
        ValueError: not (B, 3k, H, W).
    """
    if images.ndim != 4 or images.shape[1] == 0 or images.shape[1] % 3:
        raise ValueError(f"expected (B, 3, H, W) images (or (B, 3k, H, W) stacks), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    dev = images.device
    apply = torch.rand(b, device=dev) < p
    target = (area[0] + (area[1] - area[0]) * torch.rand(b, attempts, device=dev)) * (h * w)
    aspect = min_aspect + (1.0 / min_aspect - min_aspect) * torch.rand(b, attempts, device=dev)
    eh = torch.round(torch.sqrt(target * aspect)).long()  # (B, attempts)
    ew = torch.round(torch.sqrt(target / aspect)).long()
    ok = (eh < h) & (ew < w)
    first = ok.int().argmax(dim=1, keepdim=True)  # first accepted draw
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)  # (B,)
    y0 = (torch.rand(b, device=dev) * (h - eh + 1)).long().clamp(max=h - 1)
    x0 = (torch.rand(b, device=dev) * (w - ew + 1)).long().clamp(max=w - 1)
    r = torch.arange(h, device=dev).unsqueeze(0)
    c = torch.arange(w, device=dev).unsqueeze(0)
    in_rows = (r >= y0.unsqueeze(1)) & (r < (y0 + eh).unsqueeze(1))  # (B, H)
    in_cols = (c >= x0.unsqueeze(1)) & (c < (x0 + ew).unsqueeze(1))  # (B, W)
    mask = in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & (apply & ok.any(dim=1)).view(b, 1, 1)  # (B, H, W)
    fill_value = images.new_tensor(tuple(fill) * (images.shape[1] // 3)).view(1, -1, 1, 1)
    return torch.where(mask.unsqueeze(1), fill_value, images)


def _replicate_channel(images: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W), (B,) int64 in 0..2 -> each image's chosen channel copied to all 3 (an expanded view)."""
    b, _, h, w = images.shape
    return images.gather(1, channel.view(b, 1, 1, 1).expand(b, 1, h, w)).expand(b, 3, h, w)


def channel_exchange(images: torch.Tensor, p: float = 1.0, only: torch.Tensor | None = None) -> torch.Tensor:
    """CAJ ``ChannelExchange(gray=2)`` (Ye et al., ICCV 2021): an image becomes its R, G or B
    channel (uniformly; ``random.randint(0, 2)``) copied to all three channels.

    Args:
        images: (B, 3, H, W) float.
        p: probability that an image is exchanged. GLMN's and MSCMNet's augmented visible
            views exchange every image (p = 1, their transform lists apply it always);
            ``channel_aug = true`` on AGW / MSO / TSME exchanges half of the visible images
            (p = 0.5, as CAJ's ``RandomChoice`` between the plain and the exchanged view).
        only: optional (B,) bool: images that may be exchanged (the visible ones); the
            others are returned unchanged.

    The channel is drawn for every image first, then (when ``p < 1`` or ``only`` is given)
    whether to apply it, so p = 1 draws one number per image.

    Shapes: (B, 3, H, W) -> (B, 3, H, W).
    """
    b = images.shape[0]
    chosen = _replicate_channel(images, torch.randint(0, 3, (b,), device=images.device))
    if p >= 1.0 and only is None:
        return chosen
    apply = torch.rand(b, device=images.device) < p
    if only is not None:
        apply = apply & only.to(images.device)
    return torch.where(apply.view(b, 1, 1, 1), chosen, images)


def _copy_or_gray(images: torch.Tensor, p: float, copy_channels: tuple[int, ...]) -> torch.Tensor:
    """ChannelAdapGray's scheme: idx uniform in 0 .. len(copy_channels); idx < n copies channel
    ``copy_channels[idx]`` to all three; idx = n gives, with probability p, the grayscale
    ``CAJ_GRAY_WEIGHTS . (R, G, B)`` in all three channels, else the image unchanged
    (``if random.uniform(0, 1) > p: return img``)."""
    b = images.shape[0]
    n = len(copy_channels)
    idx = torch.randint(0, n + 1, (b,), device=images.device)
    to_gray = (idx == n) & (torch.rand(b, device=images.device) <= p)
    channel = images.new_tensor(copy_channels, dtype=torch.long)[idx.clamp(max=n - 1)]
    copied = _replicate_channel(images, channel)
    gray = (images * images.new_tensor(CAJ_GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True).expand_as(images)
    out = torch.where(to_gray.view(b, 1, 1, 1), gray, images)
    return torch.where((idx < n).view(b, 1, 1, 1), copied, out)


def adaptive_gray_caj(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """CAJ ``ChannelAdapGray(probability=p)`` as released (mangye16/Channel-Augmented-Joint-Learning
    ``ChannelAug.py``; GLMN's copy, cq0907/GFMNet ``ChannelAug.py``): ``random.randint(0, 3)``;
    0-2 copy that channel (R, G or B) to all three; 3: with probability p the grayscale
    0.2989 R + 0.587 G + 0.114 B, else unchanged. So 3/4 channel copies, p/4 gray,
    (1 - p)/4 unchanged.

    Shapes: (B, 3, H, W) float -> (B, 3, H, W).
    """
    return _copy_or_gray(images, p, (0, 1, 2)).contiguous()


def adaptive_gray_mscmnet(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """MSCMNet's edited ``ChannelAdapGray(probability=p)`` (Hua-XC/MSCMNet ``channel_aug.py``):
    ``random.randint(0, 1)``; 0 copies channel 1 (G) to all three; 1: with probability p the
    grayscale 0.2989 R + 0.587 G + 0.114 B, else unchanged. So P(G copy) = 1/2,
    P(gray) = p/2, P(unchanged) = (1 - p)/2.

    MSCMNet applies it to *normalised* infrared tensors (``train_transforms_thermal1``:
    ``normalize`` first). Its issue #4 reports that it returns infrared images unchanged,
    true of their equal raw channels; after normalisation the channels differ, so the G copy
    and the gray branch do change them. We do what the code does.

    Shapes: (B, 3, H, W) float -> (B, 3, H, W).
    """
    return _copy_or_gray(images, p, (1,))


def random_grayscale(images: torch.Tensor, p: float) -> torch.Tensor:
    """torchvision ``RandomGrayscale(p)`` (MSCMNet's first visible view): with probability p
    per image, 0.299 R + 0.587 G + 0.114 B (PIL "L", without its uint8 rounding) in all
    three channels.

    Shapes: (B, 3, H, W) float [0, 1] -> same.
    """
    apply = torch.rand(images.shape[0], device=images.device) < p
    gray = (BT601[0] * images[:, 0:1] + BT601[1] * images[:, 1:2] + BT601[2] * images[:, 2:3]).expand_as(images)
    return torch.where(apply.view(-1, 1, 1, 1), gray, images)


def brightness_jitter(images: torch.Tensor, strength: float) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness=strength)`` on PIL images (MSCMNet's second
    infrared view): every image scaled by a factor uniform in [max(0, 1 - s), 1 + s],
    clipped to [0, 1] (no uint8 rounding).

    Shapes: (B, 3, H, W) float [0, 1] -> same.
    """
    low = max(0.0, 1.0 - strength)
    factor = low + (1.0 + strength - low) * torch.rand(images.shape[0], 1, 1, 1, device=images.device)
    return (images * factor).clamp(0.0, 1.0)


def channel_t(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """MSCMNet ``channel_aug.py`` ``ChannelT(probability=p)``: with probability p per image,
    channel c is multiplied by 2 a_c, a_c uniform in [0.01, 0.5] (three independent draws).

    Shapes: (B, 3, H, W) float (normalised) -> same.
    """
    b = images.shape[0]
    apply = ~(torch.rand(b, device=images.device) > p)
    scale = 2.0 * (0.01 + 0.49 * torch.rand(b, 3, 1, 1, device=images.device))
    return torch.where(apply.view(b, 1, 1, 1), images * scale, images)


# --------------------------------------------------------------------------- CAJ's joint-learning views

#: Each training view's modality (the stem or network it goes through) and the views' row order.
VIEW_MODALITY = {"vis": "vis", "vis_ca": "vis", "ir": "ir"}
VIEW_ORDER = ("vis", "vis_ca", "ir")


def view_rows(inputs: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """(B,) int64: the row of the loop's ``[vis; ir]`` image batch behind each output row of
    a model fed ``inputs`` (views in :data:`VIEW_ORDER`), so that ``labels[view_rows(...)]``
    are the views' labels (a "vis_ca" row has its image's label).

    Raises:
        ValueError: "vis" and "vis_ca" of different batch sizes.
    """
    vis_sizes = {inputs[s].shape[0] for s in ("vis", "vis_ca") if s in inputs}
    if len(vis_sizes) > 1:
        raise ValueError(f"'vis' and 'vis_ca' must be two views of the same images, got batch sizes {sorted(vis_sizes)}")
    n_vis = vis_sizes.pop() if vis_sizes else 0
    pieces = [torch.arange(n_vis, device=device) for s in ("vis", "vis_ca") if s in inputs]
    if "ir" in inputs:
        pieces.append(n_vis + torch.arange(inputs["ir"].shape[0], device=device))
    return torch.cat(pieces)


class CajViews(nn.Module):
    """CAJ's joint-learning training views on whole batches (Ye et al., "Channel Augmented
    Joint Learning for Visible-Infrared Recognition", ICCV 2021; mangye16/Cross-Modal-Re-ID-
    baseline@e817a26 ``ICCV21_CAJ/data_loader.py`` ``SYSUData``, ``ChannelAug.py``).

    Each visible image gives two views with independent crops and flips, each infrared
    image one:

    * ``"vis"`` (``transform_color``): pad + crop + flip, ImageNet normalisation, channel
      random erasing (fill CAJ's mean). GLMN's copy (cq0907/GFMNet ``data_loader0.py``) erases
      this view *before* normalising: ``erase_plain_before_normalising = True``;
    * ``"vis_ca"`` (``transform_color1``): pad + crop + flip, normalisation, erasing,
      :func:`channel_exchange` (``ChannelExchange(gray=2)``: R, G or B, every image);
    * ``"ir"`` (``transform_thermal``): pad + crop + flip, normalisation, erasing,
      :func:`adaptive_gray_caj` (``ChannelAdapGray(probability=0.5)``).

    CAJ's batch is ``cat(vis, vis_ca)`` through the visible stem and ``ir`` through the
    infrared one, labels ``cat(y_vis, y_vis, y_ir)`` (train_ext.py); :func:`view_rows` gives
    that layout. With ``partners`` (TSME: every image's generated partner), each view's
    partner gets that view's crop, flip and erasing rectangle (stacked along the channels),
    not its colour operations: it stays pixel-aligned with its image.

    Args:
        size: (H, W) of the images.
        pad: zero padding before the random crop (CAJ: 10).
        flip_p: horizontal flip probability (CAJ: 0.5).
        erasing_p: channel random erasing probability of every view (CAJ: 0.5).
        gray_p: ChannelAdapGray probability on infrared images (CAJ: 0.5).
        erase_plain_before_normalising: GLMN's order for the "vis" view (CAJ: False).

    Shapes:
        ``forward(images, is_visible, partners=None)``: images (2n, 3, H, W) float in [0, 1],
        visible rows first; is_visible (2n,) bool; partners None or like images ->
        (views {"vis": (n_v, 3, H, W), "vis_ca": (n_v, 3, H, W), "ir": (n_i, 3, H, W)},
        normalised float, channels_last; and the partners' views alike, or None). Pass
        ``is_visible`` on the CPU (the loop's ``~is_ir``) to avoid a host sync.

    Raises:
        TypeError: images not floating point. ValueError: wrong shapes or size, or visible
            rows not first.
    """

    def __init__(self, size: tuple[int, int], pad: int = 10, flip_p: float = 0.5, erasing_p: float = 0.5, gray_p: float = 0.5,
                 erase_plain_before_normalising: bool = False) -> None:
        super().__init__()
        self.size = tuple(size)
        self.pad, self.flip_p, self.erasing_p, self.gray_p = pad, flip_p, erasing_p, gray_p
        self.erase_plain_before_normalising = erase_plain_before_normalising

    @torch.no_grad()
    def forward(self, images: torch.Tensor, is_visible: torch.Tensor, partners: torch.Tensor | None = None):
        if not images.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.size:
            raise ValueError(f"expected (B, 3, {self.size[0]}, {self.size[1]}) images, got {tuple(images.shape)}")
        if is_visible.dtype != torch.bool or is_visible.shape != images.shape[:1]:
            raise ValueError(f"is_visible must be ({images.shape[0]},) bool, got {tuple(is_visible.shape)} {is_visible.dtype}")
        if partners is not None and partners.shape != images.shape:
            raise ValueError(f"partners must have the images' shape {tuple(images.shape)}, got {tuple(partners.shape)}")
        n_vis = int(is_visible.sum())
        if bool((is_visible != (torch.arange(is_visible.shape[0], device=is_visible.device) < n_vis)).any()):
            raise ValueError("visible rows must come first in the batch")
        n_ir = images.shape[0] - n_vis
        stacked = images if partners is None else torch.cat([images, partners], dim=1)  # (2n, 3 or 6, H, W)
        src = torch.cat([stacked[:n_vis], stacked[:n_vis], stacked[n_vis:]], dim=0)  # (2 n_v + n_i, 3 or 6, H, W)
        vis, vis_ca, ir = pad_crop_flip(src, self.pad, self.flip_p).split([n_vis, n_vis, n_ir])
        if self.erase_plain_before_normalising:
            vis = _normalize_stack(random_erasing(vis, self.erasing_p))  # fill in [0, 1] units (GLMN)
        else:
            vis = random_erasing(_normalize_stack(vis), self.erasing_p)
        vis_ca = random_erasing(_normalize_stack(vis_ca), self.erasing_p)
        vis_ca = torch.cat([channel_exchange(vis_ca[:, :3]), vis_ca[:, 3:]], dim=1)  # the image's colours only
        ir = random_erasing(_normalize_stack(ir), self.erasing_p)
        ir = torch.cat([adaptive_gray_caj(ir[:, :3], self.gray_p), ir[:, 3:]], dim=1)
        views = {"vis": vis, "vis_ca": vis_ca, "ir": ir}
        out = {k: v[:, :3].contiguous(memory_format=torch.channels_last) for k, v in views.items()}
        if partners is None:
            return out, None
        return out, {k: v[:, 3:].contiguous(memory_format=torch.channels_last) for k, v in views.items()}


def _normalize_stack(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of an image, or of an image stacked with its partner (B, 6, H, W)."""
    mean = x.new_tensor(IMAGENET_MEAN * (x.shape[1] // 3)).view(1, -1, 1, 1)
    std = x.new_tensor(IMAGENET_STD * (x.shape[1] // 3)).view(1, -1, 1, 1)
    return (x - mean) / std
