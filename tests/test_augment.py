import pytest
import torch

from common.data.augment import IMAGENET_MEAN, IMAGENET_STD, ReidTrainAugment, from_gan_domain, to_float_images, to_gan_domain


def _denorm(x):
    return x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def test_image_and_partner_get_the_same_crop_and_flip():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 16)
    partners = images.flip(1) * 0.5  # a known function of the image
    aug = ReidTrainAugment((32, 16), pad=4, flip_p=0.5)
    out, out_p = aug(images, partners)
    assert out.shape == images.shape and out_p.shape == images.shape
    x, p = _denorm(out), _denorm(out_p)
    assert torch.allclose(p, x.flip(1) * 0.5, atol=1e-5)  # same geometry: relation preserved
    assert not torch.allclose(x, images, atol=1e-3)  # something was actually cropped/flipped


def test_conversions_and_bad_input():
    u8 = torch.randint(0, 256, (2, 8, 4, 3), dtype=torch.uint8)
    x = to_float_images(u8, torch.device("cpu"))
    assert x.shape == (2, 3, 8, 4) and x.min() >= 0 and x.max() <= 1
    g = to_gan_domain(x)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(g[:, 1], luma * 2 - 1, atol=1e-6) and torch.equal(g[:, 0], g[:, 2])
    back = from_gan_domain(g)
    assert back.dtype == torch.uint8 and back.shape == (2, 8, 4, 3)
    with pytest.raises(TypeError):
        to_float_images(u8.float(), torch.device("cpu"))
    with pytest.raises(ValueError):
        ReidTrainAugment((8, 4))(torch.rand(2, 1, 8, 4))


def test_channel_exchange_only_touches_visible_images():
    torch.manual_seed(1)
    images = torch.rand(64, 3, 4, 4)
    is_visible = torch.arange(64) < 32
    aug = ReidTrainAugment((4, 4), pad=0, flip_p=0.0, channel_aug=True)
    out, _ = aug(images, None, is_visible=is_visible)
    x = _denorm(out)
    assert torch.allclose(x[32:], images[32:], atol=1e-5)
    changed = ~torch.isclose(x[:32], images[:32], atol=1e-5).flatten(1).all(1)
    assert 0 < changed.sum() < 32
    for i in torch.nonzero(changed).flatten():
        assert torch.allclose(x[i, 0], x[i, 1], atol=1e-5) and torch.allclose(x[i, 1], x[i, 2], atol=1e-5)


def test_random_gray_mix_projects_visible_images_only():
    from common.data.augment import random_gray_mix

    torch.manual_seed(2)
    images = torch.rand(64, 3, 6, 5)
    is_visible = torch.arange(64) % 2 == 0
    out = random_gray_mix(images, is_visible, p=1.0)
    assert torch.equal(out[~is_visible], images[~is_visible])
    vis_out, vis_in = out[is_visible], images[is_visible]
    assert torch.equal(vis_out[:, 0], vis_out[:, 1]) and torch.equal(vis_out[:, 1], vis_out[:, 2])
    assert torch.allclose(vis_out.amin(dim=(1, 2, 3)), torch.zeros(32), atol=1e-6)
    assert torch.allclose(vis_out.amax(dim=(1, 2, 3)), torch.ones(32), atol=1e-6)
    # each output is an affine function of one linear projection of its input's channels
    for x, y in zip(vis_in[:4], vis_out[:4]):
        design = torch.cat([x.reshape(3, -1).T, torch.ones(x[0].numel(), 1)], dim=1)
        coef = torch.linalg.lstsq(design, y[0].reshape(-1, 1)).solution
        assert torch.allclose(design @ coef, y[0].reshape(-1, 1), atol=1e-4)
    assert torch.equal(random_gray_mix(images, is_visible, p=0.0), images)


# ----------------------------------------------------------------------------- the exact transforms
# AGW train.py: Pad(10) with zeros, RandomCrop(288, 144), RandomHorizontalFlip(0.5),
# ToTensor (/255), Normalize(ImageNet mean/std); RandomErasing on the normalised tensor.


def test_normalisation_is_imagenet_mean_and_std_exactly():
    torch.manual_seed(3)
    images = torch.rand(4, 3, 6, 4)
    out, _ = ReidTrainAugment((6, 4), pad=0, flip_p=0.0)(images)
    by_hand = torch.stack([(images[:, c] - m) / s for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))], 1)
    assert torch.allclose(out, by_hand, atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last)
    from common.data.augment import imagenet_normalize

    assert torch.allclose(imagenet_normalize(images), by_hand, atol=1e-6)


def test_crop_is_a_window_of_the_zero_padded_image_with_every_offset_up_to_the_pad():
    torch.manual_seed(4)
    pad, h, w = 3, 8, 6
    images = torch.rand(300, 3, h, w) * 0.8 + 0.1  # never 0: padding shows as exact zeros
    out, _ = ReidTrainAugment((h, w), pad=pad, flip_p=0.0)(images)
    x = _denorm(out)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = set()
    for i in range(len(images)):
        match = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.allclose(x[i], padded[i, :, dy:dy + h, dx:dx + w], atol=1e-5)]
        assert len(match) == 1, i
        offsets.add(match[0])
    ys, xs = {o[0] for o in offsets}, {o[1] for o in offsets}
    assert ys == set(range(2 * pad + 1)) and xs == set(range(2 * pad + 1))


def test_flip_happens_to_about_half_the_images_and_never_when_disabled():
    torch.manual_seed(5)
    images = torch.rand(400, 3, 4, 5)
    x = _denorm(ReidTrainAugment((4, 5), pad=0, flip_p=0.5)(images)[0])
    flipped = torch.isclose(x, images.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(x, images, atol=1e-5).flatten(1).all(1)
    assert bool((flipped ^ same).all())
    assert 0.42 < flipped.float().mean() < 0.58
    x = _denorm(ReidTrainAugment((4, 5), pad=0, flip_p=0.0)(images)[0])
    assert torch.allclose(x, images, atol=1e-5)


def test_erasing_writes_zero_after_normalisation_in_the_same_box_of_image_and_partner():
    torch.manual_seed(6)
    images = torch.rand(8, 3, 32, 16) * 0.5 + 0.6  # normalised values are all positive
    partners = torch.rand(8, 3, 32, 16) * 0.5 + 0.6
    out, out_p = ReidTrainAugment((32, 16), pad=0, flip_p=0.0, erasing_p=1.0)(images, partners)
    erased = out == 0
    assert erased.flatten(1).any(1).all()  # p = 1: every image has a box
    assert torch.equal(erased, out_p == 0)  # the partner's box is the same one
    assert torch.equal(erased[:, 0], erased[:, 2])  # all channels of the box
    out, _ = ReidTrainAugment((32, 16), pad=0, flip_p=0.0, erasing_p=0.0)(images)
    assert not (out == 0).any()


def test_channel_exchange_picks_each_channel_for_about_half_the_visible_images():
    torch.manual_seed(7)
    images = torch.rand(600, 3, 2, 2)
    is_visible = torch.ones(600, dtype=torch.bool)
    x = _denorm(ReidTrainAugment((2, 2), pad=0, flip_p=0.0, channel_aug=True)(images, None, is_visible=is_visible)[0])
    picked = []
    for i in range(600):
        same = [c for c in range(3) if torch.allclose(x[i], images[i, c].expand(3, -1, -1), atol=1e-5)]
        picked.append(same[0] if same else -1)
    picked = torch.tensor(picked)
    assert 0.42 < (picked >= 0).float().mean() < 0.58
    assert set(picked[picked >= 0].tolist()) == {0, 1, 2}
    assert torch.allclose(x[picked < 0], images[picked < 0], atol=1e-5)


def test_gray_mix_rate_follows_p():
    from common.data.augment import random_gray_mix

    torch.manual_seed(8)
    images = torch.rand(600, 3, 3, 3)
    out = random_gray_mix(images, torch.ones(600, dtype=torch.bool), p=0.3)
    changed = ~torch.isclose(out, images).flatten(1).all(1)
    assert 0.24 < changed.float().mean() < 0.36


def test_uint8_and_gan_domain_conversions_are_exact():
    u8 = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    x = to_float_images(u8, torch.device("cpu"))
    assert torch.equal(x.flatten(), torch.tensor([0.0, 128 / 255, 1.0]))
    assert x.is_contiguous(memory_format=torch.channels_last)
    y = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.5, -2.0]).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    assert from_gan_domain(y)[0, ..., 0].flatten().tolist() == [0, 64, 128, 255, 255, 0]  # 63.75 -> 64, 127.5 -> 128
    with pytest.raises(ValueError):
        to_float_images(torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.device("cpu"))


def test_random_gray_mix_is_the_min_max_rescaled_projection_w_dot_rgb():
    from common.data.augment import random_gray_mix

    images = torch.rand(3, 3, 4, 2, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    out = random_gray_mix(images, torch.ones(3, dtype=torch.bool), p=1.0)
    torch.manual_seed(11)  # the same draws: apply (B,), then w (B, 3, 1, 1) uniform in [-1, 1]
    torch.rand(3)
    w = torch.rand(3, 3, 1, 1) * 2 - 1
    for b in range(3):
        g = (w[b, 0] * images[b, 0] + w[b, 1] * images[b, 1] + w[b, 2] * images[b, 2])  # g = w . (R, G, B)
        g = (g - g.min()) / (g.max() - g.min())
        assert torch.allclose(out[b, 0], g, atol=1e-6) and torch.allclose(out[b, 2], g, atol=1e-6)
