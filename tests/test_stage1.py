import pytest
import torch

from stage1_dsgan.image_pool import ImagePool
from stage1_dsgan.losses import discriminator_loss, generator_loss, lsgan_loss
from stage1_dsgan.networks import DSGANGenerator, PatchDiscriminator


@pytest.fixture(scope="module")
def paper_generator():
    torch.manual_seed(0)
    return DSGANGenerator(64, (3, 4, 6, 3)).eval()


def test_paper_generator_shapes_at_288x144(paper_generator):
    g = paper_generator
    x = torch.rand(1, 3, 288, 144) * 2 - 1
    with torch.no_grad():
        y = g(x)
        x1 = g.stem.forward_pre_pool(x)
        x5 = g.layer4(g.layer3(g.layer2(g.layer1(g.stem.maxpool(x1)))))
        d1 = g.deconv1(x5)
    assert y.shape == (1, 3, 288, 144)
    assert x1.shape == (1, 64, 144, 72)
    assert x5.shape == (1, 2048, 18, 9)  # ResNet-50 encoder, layer4 at stride 1
    assert d1.shape == (1, 1024, 18, 9)  # deconv1: 2048 -> 1024, added to layer3's output
    assert g.up4[0].in_channels == 128 and g.up4[0].out_channels == 64 and g.deconv5.out_channels == 1  # gray, replicated
    assert g.up2[0].bias is None and g.deconv5.bias is None


def test_paper_discriminator_shapes_and_widths():
    d = PatchDiscriminator((128, 128, 256, 512))
    out = d(torch.rand(2, 3, 288, 144))
    assert out.shape == (2, 1, 18, 9)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 128, 256, 512, 1]
    norms = [m for m in d.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3  # none on the first block


def test_gray_output_has_three_equal_channels_and_tsme_layout_does_not():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 16) * 2 - 1
    gray = DSGANGenerator(8, (1, 1, 1, 1)).eval()(x)
    assert gray.shape == (2, 3, 32, 16) and torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    tsme = DSGANGenerator(8, (1, 1, 1, 1), out_channels=3).eval()
    assert tsme.deconv5.out_channels == 3
    y = tsme(x)
    assert not torch.allclose(y[:, 0], y[:, 1])
    with pytest.raises(ValueError, match="out_channels"):
        DSGANGenerator(8, (1, 1, 1, 1), out_channels=2)


def test_generator_output_is_tanh_bounded_even_when_the_last_layer_is_large():
    # with the last transposed convolution scaled up, the pre-activation far exceeds [-1, 1]:
    # a tanh output saturates near +-1 but never leaves [-1, 1]
    torch.manual_seed(0)
    g = DSGANGenerator(8, (1, 1, 1, 1)).eval()
    with torch.no_grad():
        g.deconv5.weight.mul_(1e4)
        y = g(torch.rand(2, 3, 32, 16) * 2 - 1)
    assert y.abs().max() <= 1.0 and y.abs().max() > 0.999
    assert (y.abs() > 0.99).float().mean() > 0.5


def test_generator_rejects_sizes_not_multiple_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        DSGANGenerator(8, (1, 1, 1, 1))(torch.zeros(1, 3, 30, 16))


def test_lsgan_and_discriminator_loss_by_hand():
    scores = torch.tensor([0.5, -0.5])
    assert lsgan_loss(scores, True).item() == pytest.approx(((0.5 - 1) ** 2 + (-1.5) ** 2) / 2)
    assert lsgan_loss(scores, False).item() == pytest.approx((0.25 + 0.25) / 2)
    # D: (MSE(real, 1) + MSE(fake, 0)) / 2 = ((1 - 1)^2 + (0.5)^2) / 2
    assert discriminator_loss(torch.tensor([1.0]), torch.tensor([0.5])).item() == pytest.approx(0.125)


def test_generator_loss_by_hand():
    z = torch.zeros(1, 1, 2, 2)
    o = torch.ones(1, 1, 2, 2)
    losses = generator_loss(
        d_ir_on_fake_ir=torch.full((1, 1, 1, 1), 0.0),  # (0 - 1)^2 = 1
        d_vis_on_fake_vis=torch.full((1, 1, 1, 1), 0.25),  # (0.25 - 1)^2 = 0.5625 (target 0 would give 0.0625)
        vis=z, ir=o,
        cycled_vis=z + 0.2, cycled_ir=o,  # L1 0.2 and 0
        identity_vis=z, identity_ir=o - 0.4,  # L1 0 and 0.4
        lambda_cycle=10.0, lambda_identity=5.0,
    )
    assert losses["adv"].item() == pytest.approx((1 + 0.5625) / 2)
    assert losses["cycle"].item() == pytest.approx(0.1)
    assert losses["identity"].item() == pytest.approx(0.2)
    assert losses["total"].item() == pytest.approx(0.78125 + 10 * 0.1 + 5 * 0.2)


def test_image_pool_fills_then_swaps_with_stored_images():
    pool = ImagePool(4)
    gen = torch.Generator().manual_seed(0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: returned as is
    seen_old = False
    for step in range(20):
        new = torch.full((4, 1, 1, 1), 100.0 + step)
        stored_before = set(pool.buffer.flatten().tolist())
        out = pool.query(new, gen)
        for value in out.flatten().tolist():
            assert value == 100.0 + step or value in stored_before
            seen_old |= value != 100.0 + step
        assert pool.buffer.shape[0] == 4
    assert seen_old
    assert torch.equal(ImagePool(0).query(first), first)
