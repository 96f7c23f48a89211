"""Stage 1 options of ours: what the visible -> infrared generator sees (gray / rgb), the
identity-aware translation losses, and the partner probe that scores a generator on
identities it never trained on."""

from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.augment import to_gan_domain
from stage1_dsgan.evaluate import PartnerProbe, aligned_scores, partner_rank1, partner_thumbnails
from stage1_dsgan.identity import ModalityReidNet, cross_triplet, identity_batch, identity_losses
from stage1_dsgan.networks import DSGANGenerator

CPU = torch.device("cpu")


def test_prepare_gives_the_gray_copy_or_the_colour_image_and_both_agree_on_infrared():
    torch.manual_seed(0)
    colour = torch.rand(2, 3, 16, 16)
    infrared = torch.rand(2, 1, 16, 16).expand(-1, 3, -1, -1)
    gray, rgb = DSGANGenerator(4, (1, 1, 1, 1)), DSGANGenerator(4, (1, 1, 1, 1), input_mode="rgb")
    assert torch.equal(gray.prepare(colour), to_gan_domain(colour))
    assert torch.allclose(rgb.prepare(colour), colour * 2 - 1)
    assert torch.allclose(gray.prepare(infrared), rgb.prepare(infrared), atol=1e-6)
    # two colours of the same BT.601 gray: one input for the gray generator, two for the rgb one
    a = torch.tensor([0.8, 0.2, 0.3]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    luma = 0.299 * 0.8 + 0.587 * 0.2 + 0.114 * 0.3
    b = torch.tensor([0.2, (luma - 0.299 * 0.2 - 0.114 * 0.5) / 0.587, 0.5]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    assert torch.allclose(gray.prepare(a), gray.prepare(b), atol=1e-6) and not torch.allclose(rgb.prepare(a), rgb.prepare(b))
    with pytest.raises(ValueError, match="input_mode"):
        DSGANGenerator(4, (1, 1, 1, 1), input_mode="hsv")


def test_cross_triplet_by_hand():
    # unit features on a circle: anchors at angle 0 and 90 degrees, reals at 0, 60, 180 degrees
    def unit(deg):
        r = np.deg2rad(deg)
        return [np.cos(r), np.sin(r)]

    anchors = torch.tensor([unit(0), unit(90)]) * torch.tensor([[3.0], [0.5]])  # lengths do not matter
    reals = torch.tensor([unit(0), unit(60), unit(180)])
    a_lab, r_lab = torch.tensor([0, 1]), torch.tensor([0, 1, 0])
    chord = lambda deg: 2 * np.sin(np.deg2rad(deg) / 2)  # distance of two unit vectors deg apart
    # anchor 0 (class 0): positives at 0 and 180 -> hardest 2; negative at 60 -> chord(60) = 1
    # anchor 1 (class 1): positive at 60 -> chord(30); negatives at 0, 180 -> chord(90)
    expected = (max(0, 2 - 1 + 0.3) + max(0, chord(30) - chord(90) + 0.3)) / 2
    assert cross_triplet(anchors, a_lab, reals, r_lab, 0.3).item() == pytest.approx(expected, abs=1e-6)
    assert cross_triplet(anchors, a_lab, reals, r_lab, 0.0).item() == pytest.approx(max(0, 2 - 1) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="another identity"):
        cross_triplet(anchors, a_lab, reals, torch.tensor([0, 0, 0]), 0.3)
    with pytest.raises(ValueError, match="another identity"):  # every anchor has a positive, none a negative
        cross_triplet(anchors, torch.tensor([0, 0]), reals, torch.tensor([0, 0, 0]), 0.3)
    with pytest.raises(ValueError, match="its identity"):
        cross_triplet(anchors, torch.tensor([0, 2]), reals, r_lab, 0.3)


def test_identity_losses_reach_the_translations_only():
    torch.manual_seed(0)
    net = ModalityReidNet(4, (1, 1, 1, 1), num_classes=3).eval().requires_grad_(False)
    fakes = torch.rand(4, 3, 32, 16, requires_grad=True)
    reals = torch.rand(4, 3, 32, 16)
    losses = identity_losses(net, fakes, torch.tensor([0, 0, 1, 1]), reals, torch.tensor([0, 1, 0, 1]), 0.3)
    (losses["ce"] + losses["triplet"]).backward()
    assert fakes.grad is not None and fakes.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    logits = net(fakes.detach())[1]
    assert losses["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 1, 1])).item(), rel=1e-5)


def test_identity_batch_is_p_classes_times_k_rows_of_each_modality():
    vis_by_class = [np.array([0, 1]), np.array([5]), np.array([7, 8, 9])]
    ir_by_class = [np.array([2, 3]), np.array([6]), np.array([10])]
    rng = np.random.default_rng(0)
    for _ in range(20):
        vis, ir, classes = identity_batch(rng, vis_by_class, ir_by_class, 2, 3)
        assert len(vis) == len(ir) == len(classes) == 6
        assert len(set(classes.tolist())) == 2 and all((classes[i * 3: i * 3 + 3] == classes[i * 3]).all() for i in range(2))
        for c, v, i in zip(classes, vis, ir):
            assert v in vis_by_class[c] and i in ir_by_class[c]


def test_partner_thumbnails_are_centred_unit_rows_and_rank1_by_hand():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 40, 20, 3), dtype=np.uint8)
    t = partner_thumbnails(images)
    assert t.shape == (5, 24 * 8) and np.allclose(t.mean(axis=1), 0, atol=1e-6) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert np.allclose(partner_thumbnails(np.full((1, 40, 20, 3), 7, np.uint8)), 0)  # flat image: zero row
    # every query's nearest gallery row is its own copy: Rank-1 100; with shifted labels 0
    assert partner_rank1(t, np.arange(5), t, np.arange(5)) == 100.0
    assert partner_rank1(t, np.arange(5), t, np.roll(np.arange(5), 1)) == 0.0
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    g = np.array([[0.8, 0.6], [0.0, 1.0]])
    # cosines: q0 -> g0 (0.8 vs 0), q1 -> g1 (0.6 vs 1), q2 -> g0 (0.96 vs 0.8)
    assert partner_rank1(q, np.array([1, 2, 1]), g, np.array([1, 2])) == 100.0
    assert partner_rank1(q, np.array([1, 2, 2]), g, np.array([1, 2])) == pytest.approx(200 / 3)


def test_probe_scores_the_twins_perfectly_and_the_gray_copy_as_its_baseline():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(4), 3)
    visible = rng.integers(0, 256, size=(12, 32, 16, 3), dtype=np.uint8)
    twins = rng.integers(0, 256, size=(12, 32, 16, 3), dtype=np.uint8)
    probe = PartnerProbe(visible, twins, pids, twins[::2].copy(), pids[::2])
    base = probe.baselines()
    assert base["twin"]["l1"] == 0 and base["twin"]["ssim"] == pytest.approx(1.0) and base["twin"]["partner_rank1"] == 100.0
    assert base["gray"] == probe.score_partners(np.repeat(np.rint(visible @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1)
                                                .clip(0, 255).astype(np.uint8))
    assert aligned_scores(visible, twins)["l1"] == pytest.approx(
        np.abs((visible @ np.float32([0.299, 0.587, 0.114])) - (twins @ np.float32([0.299, 0.587, 0.114]))).mean() / 255, abs=2e-3)

    class Oracle(torch.nn.Module):  # a "generator" that returns the twin of each visible image
        def prepare(self, x):
            return x

        def forward(self, x):
            rows = [int(np.argmin(np.abs(visible.astype(np.float32) / 255 - x[i].permute(1, 2, 0).numpy()).sum(axis=(1, 2, 3))))
                    for i in range(len(x))]
            return torch.from_numpy(twins[rows]).permute(0, 3, 1, 2).float().div(127.5).sub(1)

    oracle = Oracle().train()
    assert probe.score_generator(oracle, CPU, batch_size=5)["partner_rank1"] == 100.0
    assert oracle.training  # mode restored


def _probe_of(split) -> PartnerProbe:
    """A probe on a split: its visible images, their gray copies as stand-in twins, its infrared queries."""
    from common.data.images import to_grayscale_bt601

    vis, ir = np.flatnonzero(~split.is_ir), np.flatnonzero(split.is_ir)
    visible = np.asarray(split.images[vis])
    return PartnerProbe(visible, to_grayscale_bt601(visible), split.pids[vis], np.asarray(split.images[ir]), split.pids[ir])


IDENTITY_GAN = {"input": "rgb", "reid_id_weight": 1.0, "reid_triplet_weight": 1.0, "reid_pretrain_steps": 6, "reid_ids_per_batch": 2,
                "monitor_every": 2}


def test_identity_aware_gan_logs_its_curve_and_resumes_to_the_same_weights(sysu_tree, tmp_path, monkeypatch):
    import json

    import stage1_dsgan.train as gan_trainer
    from stage2_fusion.methods import load_config
    from pipelines.data import load_splits
    from tests.conftest import TINY_OVERRIDES
    from tests.test_pipeline import crash_after_first_epoch

    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "gan": {**TINY_OVERRIDES["gan"], **IDENTITY_GAN}})
    splits = load_splits(cfg, "sysu", sysu_tree)
    probe = _probe_of(splits.test)
    full = torch.load(gan_trainer.train_gan(cfg, splits.train, tmp_path / "a" / "gan", CPU, dataset="sysu", probe=probe), weights_only=False)
    assert [r["step"] for r in full["curve"]] == [0, 2, 4, 6]  # 2 epochs x 3 steps, every 2 steps, from the start
    assert set(full["curve"][0]) == {"step", "l1", "psnr", "ssim", "partner_rank1"}
    assert set(full["reid_accuracy"]) == {"ir", "vis"} and set(full["probe_baselines"]) == {"gray", "twin"}
    assert full["gan"]["input"] == "rgb"
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    probed = [r["step"] for r in records if "probe_partner_rank1" in r]
    assert probed == [0, 2, 4, 6]
    assert any("loss_reid_ce" in r and "loss_reid_triplet" in r for r in records)

    with crash_after_first_epoch(monkeypatch, gan_trainer):
        gan_trainer.train_gan(cfg, splits.train, tmp_path / "b" / "gan", CPU, dataset="sysu", probe=probe)
    resumed = torch.load(gan_trainer.train_gan(cfg, splits.train, tmp_path / "b" / "gan", CPU, dataset="sysu", probe=probe),
                         weights_only=False)
    for net in ("g_vis2ir", "g_ir2vis", "d_ir", "d_vis"):
        for name in full[net]:
            assert torch.equal(full[net][name], resumed[net][name]), (net, name)
    assert resumed["curve"] == full["curve"] and resumed["reid_accuracy"] == full["reid_accuracy"]


def test_rgb_generators_load_and_translate_with_their_input(sysu_tree, tmp_path):
    from stage2_fusion.methods import load_config
    from pipelines.data import load_splits
    from stage1_dsgan.generate import load_generators, make_translator
    from tests.conftest import TINY_OVERRIDES

    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "gan": {**TINY_OVERRIDES["gan"], "input": "rgb", "epochs": 1,
                                                                    "decay_start_epoch": 0}})
    splits = load_splits(cfg, "sysu", sysu_tree, with_test=False)
    import stage1_dsgan.train as gan_trainer

    path = gan_trainer.train_gan(cfg, splits.train, tmp_path / "gan", CPU, dataset="sysu")
    gens = load_generators(path, CPU)
    assert gens.g_vis2ir.input_mode == "rgb" and gens.g_ir2vis.input_mode == "gray"
    vis = np.flatnonzero(~splits.train.is_ir)[:4]
    images = torch.from_numpy(np.asarray(splits.train.images[vis]))
    got = make_translator(gens, CPU, amp=False)(images, torch.zeros(4, dtype=torch.bool))
    from common.data.augment import from_gan_domain, to_float_images

    with torch.no_grad():
        expected = from_gan_domain(gens.g_vis2ir(to_float_images(images, CPU) * 2 - 1))  # the colour image, not its gray copy
    assert torch.equal(got, expected)


def test_rgbin_and_idgan_are_stage1_modifiers_of_tsme():
    from common.errors import UserError
    from pipelines.ablate import parse_variant, stage1_folder

    v = parse_variant("tsme-rgbin-idgan")
    assert v.stage1_modifiers == ("rgbin", "idgan")
    assert v.overrides == {"gan": {"input": "rgb", "reid_id_weight": 1.0, "reid_triplet_weight": 1.0}}
    assert stage1_folder(Path("runs"), v, 3) == Path("runs") / "stage1-rgbin-idgan-seed3"  # a stage 1 of its own
    assert stage1_folder(Path("runs"), parse_variant("tsme-caj"), 3) == Path("runs") / "stage1-seed3"  # TSME's
    with pytest.raises(UserError, match="rgbin"):
        parse_variant("agw-rgbin")


def test_the_reid_network_starts_from_the_encoders_resnet_weights(tmp_path):
    """load_encoder_weights maps torchvision's conv1 / bn1 / layer1..4 onto stem and layers,
    every tensor of them, values unchanged; weights of another width are refused naming the net."""
    from common.errors import UserError

    source = ModalityReidNet(16, (1, 1, 1, 1), num_classes=5)
    for p in source.parameters():
        torch.nn.init.normal_(p)
    torchvision_names = {k.replace("stem.", "", 1): v for k, v in source.state_dict().items()
                         if k.startswith(("stem.", "layer")) and "num_batches_tracked" not in k}
    torchvision_names["fc.weight"] = torch.zeros(10, 512)  # the classifier of the file: not ours, dropped
    path = tmp_path / "resnet.pth"
    torch.save(torchvision_names, path)
    net = ModalityReidNet(16, (1, 1, 1, 1), num_classes=3)
    assert net.load_encoder_weights(str(path)) == len(torchvision_names) - 1
    mine = net.state_dict()
    for key, value in torchvision_names.items():
        if key != "fc.weight":
            name = key if key.startswith("layer") else f"stem.{key}"
            assert torch.equal(mine[name], value), name
    assert net.load_encoder_weights("none") == 0
    with pytest.raises(UserError, match="re-ID network of stage 1"):
        ModalityReidNet(32, (1, 1, 1, 1), num_classes=3).load_encoder_weights(str(path))
