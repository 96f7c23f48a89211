import pytest
import torch

from common.augment import IMAGENET_MEAN, IMAGENET_STD, ReidTrainAugment, from_gan_domain, to_float_images, to_gan_domain


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
    from common.augment import random_gray_mix

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
