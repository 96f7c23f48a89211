"""TSME's DSGAN ("Deeper Skip-connection GAN") generator and PatchGAN discriminator.

Source: Liu et al., "Revisiting Modality-Specific Feature Compensation for Visible-Infrared
Person Re-Identification", IEEE TCSVT 32(10), 2022, and its public code
(jnLreID/Revisiting-Modality-specific-Feature-Compensation-for-Visible-Infrared-Person-Re-Identification,
generatemodel.py ``Generatorfeature`` and ``Discriminator`` at commit 99bc54c).

Generator (per direction, visible-gray -> infrared and infrared -> visible-gray):

* encoder: a ResNet-50 (stem, layer1..layer4) with layer4 at stride 1, tapped at
  x1 = relu(bn1(conv1)) (w ch, H/2), x2 = layer1 (4w, H/4), x3 = layer2 (8w, H/8),
  x4 = layer3 (16w, H/16), x5 = layer4 (32w, H/16); w = 64 for ResNet-50;
* decoder: "deconv" blocks of two bottlenecks (width in -> in -> out), transposed
  convolutions (k4, s2, p1, no bias) + ReLU to upsample, and **additive** skips:
  deconv1(x5) + x4 -> deconv2 -> up2 + x3 -> deconv3 -> up3 + x2 -> deconv4 -> up4 + x1
  -> deconv5 (transposed conv to 3 channels, H x W);
* output: ``tanh``. TSME's released code has no output activation; we follow the
  CycleGAN implementation its GAN path names (eriklindernoren/PyTorch-GAN), whose images
  are normalised to [-1, 1] and whose generators end in tanh, so that outputs are
  bounded and map to uint8 without clipping surprises;
* input (``input_mode``): TSME's data_loader.py feeds both generators the ``Grayscale(3)``
  copy of a visible image (``"gray"``, the default: BT.601 luma replicated to 3 channels).
  ``"rgb"`` (an option of ours, ``gan.input``) lets the visible -> infrared generator see the
  colour image: near-infrared reflectance depends on the dye, not on its visible luminance
  (two dyes of one gray can be far apart at 850 nm), so a gray input has lost what the
  translation needs. The infrared -> visible generator always sees infrared (3 equal
  channels, where both modes give the same tensor);
* output channels: both domains of the translation (visible *grayscale* and infrared) are
  gray images with three equal channels, so by default (``out_channels = 1``) the last
  transposed convolution has one output channel, replicated to three: a translation can
  only be gray (three free channels drift apart, which showed as a green tint).
  ``out_channels = 3`` keeps TSME's released layout (``deconv5`` to 3 channels), for
  comparison.

Discriminator: PatchGAN, four Conv(k4, s2, p1) blocks of widths 128, 128, 256, 512 with
InstanceNorm on blocks 2-4 and LeakyReLU(0.2), then ZeroPad2d((1, 0, 1, 0)) and a 4x4 conv
to one channel: a (1, H/16, W/16) map of real/fake scores (18 x 9 at 288 x 144).

Initialisation: N(0, 0.02) convolutions, BN weights N(1, 0.02), biases 0 (PyTorch-GAN's
``weights_init_normal``); an ImageNet ResNet-50 can then be loaded into the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from common.data.augment import to_gan_domain
from common.nets.resnet import STEM_AND_LAYERS, Bottleneck, Stem, load_resnet_parts, make_layers, stage_channels


#: What the visible -> infrared generator sees (``gan.input``): TSME's gray copy, or the colour image.
GAN_INPUTS = ("gray", "rgb")


def init_weights_normal_(module: nn.Module) -> None:
    """N(0, 0.02) conv weights, N(1, 0.02) BatchNorm weights, zero biases (PyTorch-GAN)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _decoder_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two bottlenecks, in -> in -> out channels (TSME ``deconv*``); resolution kept."""
    return nn.Sequential(Bottleneck(in_ch, in_ch // 4), Bottleneck(in_ch, out_ch // 4))


def _upsample(in_ch: int, out_ch: int) -> nn.Sequential:
    """ConvTranspose2d(k4, s2, p1, no bias) + ReLU: doubles H and W (TSME ``upsample``)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.ReLU(inplace=True))


class DSGANGenerator(nn.Module):
    """One translation direction of the DSGAN.

    Args:
        base_width: w, the stem width (64 = ResNet-50); every width scales with it.
        encoder_layers: bottlenecks per encoder stage ((3, 4, 6, 3) = ResNet-50).
        out_channels: 1 (a gray output replicated to 3 channels; default) or 3 (TSME).
        input_mode: "gray" (TSME: the BT.601 copy replicated to 3 channels) or "rgb" (the
            colour image); :meth:`prepare` turns an image into this input.

    Shapes:
        input (B, 3, H, W) float in [-1, 1] (:meth:`prepare` of an image in [0, 1]);
        output (B, 3, H, W) float in [-1, 1], three equal channels when out_channels = 1.
        H and W must be multiples of 16.

    Raises:
        ValueError: out_channels not 1 or 3; input_mode not "gray" or "rgb".
    """

    def __init__(self, base_width: int = 64, encoder_layers: tuple[int, ...] = (3, 4, 6, 3), out_channels: int = 1,
                 input_mode: str = "gray") -> None:
        super().__init__()
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 (gray) or 3 (TSME), got {out_channels}")
        if input_mode not in GAN_INPUTS:
            raise ValueError(f"input_mode must be one of {GAN_INPUTS}, got {input_mode!r}")
        self.out_channels = out_channels
        self.input_mode = input_mode
        w = base_width
        c1, c2, c3, c4 = stage_channels(w)  # 4w, 8w, 16w, 32w
        self.stem = Stem(w)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(w, tuple(encoder_layers), last_stride=1)
        self.deconv1 = _decoder_block(c4, c3)  # 32w -> 16w at H/16
        self.deconv2 = _decoder_block(c3, c2)  # 16w -> 8w at H/16
        self.up2 = _upsample(c2, c2)  # -> H/8
        self.deconv3 = _decoder_block(c2, c1)  # 8w -> 4w
        self.up3 = _upsample(c1, c1)  # -> H/4
        self.deconv4 = _decoder_block(c1, 2 * w)  # 4w -> 2w
        self.up4 = _upsample(2 * w, w)  # -> H/2
        self.deconv5 = nn.ConvTranspose2d(w, out_channels, 4, 2, 1, bias=False)  # -> (out_channels, H, W)
        init_weights_normal_(self)

    def prepare(self, images01: torch.Tensor) -> torch.Tensor:
        """An image batch as this generator's input.

        Args:
            images01: (B, 3, H, W) float in [0, 1], RGB (visible) or 3 equal channels
                (infrared).

        Returns:
            (B, 3, H, W) float in [-1, 1]: the BT.601 gray copy replicated to 3 channels
            (``input_mode = "gray"``, :func:`common.data.augment.to_gan_domain`) or the image
            itself (``"rgb"``); both are the same tensor for an infrared image.
        """
        if self.input_mode == "gray":
            return to_gan_domain(images01)
        return images01.mul(2.0).sub(1.0).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"DSGANGenerator expects (B, 3, H, W) with H, W multiples of 16, got {tuple(x.shape)}")
        x1 = self.stem.forward_pre_pool(x)  # (B, w, H/2, W/2)
        x2 = self.layer1(self.stem.maxpool(x1))  # (B, 4w, H/4, W/4)
        x3 = self.layer2(x2)  # (B, 8w, H/8, W/8)
        x4 = self.layer3(x3)  # (B, 16w, H/16, W/16)
        x5 = self.layer4(x4)  # (B, 32w, H/16, W/16), stride 1
        d = self.deconv2(self.deconv1(x5) + x4)  # (B, 8w, H/16, W/16)
        d = self.deconv3(self.up2(d) + x3)  # (B, 4w, H/8, W/8)
        d = self.deconv4(self.up3(d) + x2)  # (B, 2w, H/4, W/4)
        d = self.up4(d) + x1  # (B, w, H/2, W/2)
        y = torch.tanh(self.deconv5(d))  # (B, out_channels, H, W)
        return y.expand(-1, 3, -1, -1).contiguous() if self.out_channels == 1 else y  # (B, 3, H, W)

    def load_imagenet_encoder(self, spec: str) -> int:
        """Load ImageNet ResNet-50 weights into the encoder (``spec``: path, "imagenet" or "none").

        Returns:
            Number of tensors loaded (0 for "none").

        Raises:
            UserError: missing file, or an encoder that is not ResNet-50 sized.
        """
        return load_resnet_parts(self, spec, [STEM_AND_LAYERS], "DSGAN encoder")


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator judging one domain (TSME ``Discriminator``).

    Args:
        widths: channels of the four stride-2 blocks (TSME: 128, 128, 256, 512).

    Shapes:
        input (B, 3, H, W) float in [-1, 1]; output (B, 1, H/16, W/16) unbounded scores
        (least-squares GAN targets: 1 real, 0 fake).
    """

    def __init__(self, widths: tuple[int, ...] = (128, 128, 256, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(widths):
            layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        layers += [nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(in_ch, 1, 4, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DSGAN(nn.Module):
    """The four networks of the DSGAN, named by direction and judged domain.

    Args:
        input_mode: what ``g_vis2ir`` sees, "gray" (TSME) or "rgb" (:data:`GAN_INPUTS`);
            ``g_ir2vis`` sees infrared images, gray in both modes.

    Attributes:
        g_vis2ir: visible(-gray) -> infrared generator (TSME ``fakeT``).
        g_ir2vis: infrared -> visible-gray generator (TSME ``fakeR``).
        d_ir: discriminator of infrared images; d_vis: of visible-gray images.
    """

    def __init__(self, base_width: int, encoder_layers: tuple[int, ...], disc_widths: tuple[int, ...], out_channels: int = 1,
                 input_mode: str = "gray") -> None:
        super().__init__()
        self.g_vis2ir = DSGANGenerator(base_width, encoder_layers, out_channels, input_mode)
        self.g_ir2vis = DSGANGenerator(base_width, encoder_layers, out_channels)
        self.d_ir = PatchDiscriminator(disc_widths)
        self.d_vis = PatchDiscriminator(disc_widths)

    def generators(self) -> list[nn.Module]:
        return [self.g_vis2ir, self.g_ir2vis]

    def discriminators(self) -> list[nn.Module]:
        return [self.d_ir, self.d_vis]


def build_dsgan(gan_cfg) -> DSGAN:
    """A :class:`DSGAN` from a :class:`common.config.GanConfig`, ImageNet encoders loaded if asked."""
    model = DSGAN(gan_cfg.base_width, tuple(gan_cfg.encoder_layers), tuple(gan_cfg.disc_widths), gan_cfg.out_channels,
                  gan_cfg.input)
    for generator in model.generators():
        generator.load_imagenet_encoder(gan_cfg.pretrained)
    return model
