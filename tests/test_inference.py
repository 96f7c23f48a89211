"""Using a trained model: ReidExtractor.extract equals the test protocol's features; inputs,
flip, TSME's generator, bad inputs; ``pipeline extract`` and its feature file."""

from __future__ import annotations

import dataclasses
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from common.checkpoint import file_sha256, save_checkpoint
from common.errors import UserError
from pipelines.feature_file import open_feature_file
from pipelines.cli import app
from pipelines.inference import ReidExtractor, list_images, model_modalities
from pipelines.partners import PartnerKind, PartnerSource
from stage2_fusion.evaluate import extract_features
from tests.conftest import INFERENCE_METHODS

CPU = torch.device("cpu")
pytestmark = pytest.mark.e2e


def protocol_features(extractor: ReidExtractor, splits, flip: bool) -> np.ndarray:
    """Features of the whole test split as ``pipeline test`` computes them (its own code)."""
    partners = None
    if extractor.partners is not None:  # the source the checkpoint records, as pipeline test reads it
        partners = PartnerSource.from_record(extractor.meta).test_partners(len(splits.test), CPU)
    return extract_features(extractor.model, splits.test, np.arange(len(splits.test)), CPU, partners=partners,
                            feature=extractor.feature, flip=flip, batch_size=7, show_progress=False)


@pytest.mark.parametrize("method", INFERENCE_METHODS)
def test_extract_from_files_equals_the_protocol_features(method, trained_checkpoints):
    """The test split's image files through extract() give the protocol's features: same decoding
    and resize, normalisation, test feature (GLMN's flip, MSCMNet's stems) and TSME partner."""
    splits = trained_checkpoints["splits"][method]
    extractor = ReidExtractor(trained_checkpoints[method], "cpu", batch_size=5)
    assert extractor.method == method and extractor.modalities == ("vis", "ir")  # read from the model's streams
    reference = protocol_features(extractor, splits, flip=False)
    paths = [s.path for s in splits.index.test]
    for stream, is_ir in (("vis", False), ("ir", True)):
        rows = np.flatnonzero(splits.test.is_ir == is_ir)
        got = extractor.extract([paths[i] for i in rows], "infrared" if is_ir else "visible")
        assert got.dtype == np.float32 and got.shape == (len(rows), extractor.dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, reference[rows], atol=1e-5, rtol=0)
    # the features tell identities apart: a trained model is not a constant function
    assert np.abs(reference[0] - reference[-1]).max() > 1e-3


@pytest.mark.parametrize("kind", list(PartnerKind))
def test_extracted_features_equal_the_protocol_for_every_partner_source(kind, trained_checkpoints, tiny_cfg, tmp_path):
    """TSME trained on each partner source (the partner cache, its generator on the fly, the
    gray control): extract() gives the protocol's features, partners included, for both
    modalities. (A change of one partner's arithmetic on one side, e.g. BGR weights in the
    gray partner, fails here.)"""
    from pipelines.stages import train_reid_stage

    splits = trained_checkpoints["splits"]["tsme"]
    if kind is PartnerKind.CACHE:
        checkpoint = trained_checkpoints["tsme"]
    else:
        source = PartnerSource.gray() if kind is PartnerKind.GRAY else PartnerSource.on_the_fly(trained_checkpoints["gan"])
        recipe = dataclasses.replace(tiny_cfg.fusion.recipe("tsme"), epochs=1, steps_per_epoch=2, eval_every=0)
        cfg = dataclasses.replace(tiny_cfg, fusion=dataclasses.replace(tiny_cfg.fusion, recipes={**tiny_cfg.fusion.recipes, "tsme": recipe}))
        checkpoint = train_reid_stage(cfg, "tsme", splits, source, tmp_path / kind.value, CPU)
    extractor = ReidExtractor(checkpoint, "cpu", batch_size=6)
    assert extractor.partners.kind is kind and (extractor.generators is None) == (kind is PartnerKind.GRAY)
    reference = protocol_features(extractor, splits, flip=False)
    for is_ir in (False, True):
        rows = np.flatnonzero(splits.test.is_ir == is_ir)
        got = extractor.extract(np.asarray(splits.test.images[rows]), "infrared" if is_ir else "visible")
        np.testing.assert_allclose(got, reference[rows], atol=1e-5, rtol=0)


def test_flip_and_the_tsme_partner_follow_the_protocol(trained_checkpoints):
    splits = trained_checkpoints["splits"]["tsme"]
    extractor = ReidExtractor(trained_checkpoints["tsme"], "cpu", flip=True)
    assert extractor.flip is True and extractor.generators is not None
    reference = protocol_features(extractor, splits, flip=True)
    rows = np.flatnonzero(~splits.test.is_ir)
    got = extractor.extract(np.asarray(splits.test.images[rows]), "visible")
    np.testing.assert_allclose(got, reference[rows], atol=1e-5, rtol=0)
    unflipped = ReidExtractor(trained_checkpoints["tsme"], "cpu")
    plain = unflipped.extract(np.asarray(splits.test.images[rows]), "visible")
    assert np.abs(plain - got).max() > 1e-4  # flip changes the feature
    # another generator changes the feature: the partner really is the generator's
    torch.nn.init.normal_(unflipped.generators.g_vis2ir.deconv5.weight, 0.0, 0.5)
    assert np.abs(unflipped.extract(np.asarray(splits.test.images[rows]), "visible") - plain).max() > 1e-3


def test_inputs_paths_pil_arrays_and_tensors_agree(trained_checkpoints, tmp_path):
    extractor = ReidExtractor(trained_checkpoints["agw"], "cpu")
    h, w = extractor.image_size
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(3, 2 * h + 5, 2 * w + 3, 3), dtype=np.uint8)  # not the model's size
    files = []
    for i, image in enumerate(big):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(image).save(files[-1])
    from_files = extractor.extract([str(f) for f in files], "visible")
    from_pil = extractor.extract([Image.open(f) for f in files], "vis")
    from_arrays = extractor.extract([image for image in big], "visible")
    assert from_files.shape == (3, extractor.dim)
    np.testing.assert_array_equal(from_files, from_pil)
    np.testing.assert_array_equal(from_files, from_arrays)
    # the resize is the array cache's (Lanczos): the resized batch gives the same features
    from common.data.images import read_image

    resized = np.stack([read_image(f, (h, w)) for f in files])
    np.testing.assert_allclose(extractor.extract(resized, "visible"), from_files, atol=1e-6)
    np.testing.assert_allclose(extractor.extract(torch.from_numpy(resized), "visible"), from_files, atol=1e-6)
    # a lone path is a batch of one; batch size does not change the features
    np.testing.assert_allclose(extractor.extract(files[1], "visible"), from_files[1:2], atol=1e-6)
    np.testing.assert_allclose(extractor.extract(resized, "visible", batch_size=1), from_files, atol=1e-5)
    assert extractor.extract([], "infrared").shape == (0, extractor.dim)
    with pytest.raises(TypeError, match="uint8"):
        extractor.extract(resized.astype(np.float32), "visible")
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        extractor.extract(resized[..., 0], "visible")


def test_bad_inputs_are_refused_by_name(trained_checkpoints, tmp_path):
    extractor = ReidExtractor(trained_checkpoints["agw"], "cpu")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a JPEG")
    with pytest.raises(UserError, match="notes.jpg cannot be read as an image"):
        extractor.extract([not_an_image], "visible")
    with pytest.raises(UserError, match="does not exist"):
        extractor.extract([tmp_path / "missing.jpg"], "visible")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no image files"):
        list_images([empty])
    with pytest.raises(UserError, match="modality 'thermal' is unknown"):
        extractor.extract([not_an_image], "thermal")
    # a checkpoint without an infrared stream (every method here has both: the check reads the model)
    extractor.modalities = ("vis",)
    with pytest.raises(UserError, match="has no infrared stream"):
        extractor.extract(np.zeros((1, *extractor.image_size, 3), np.uint8), "infrared")
    with pytest.raises(UserError, match="not exist"):
        ReidExtractor(tmp_path / "missing.pt", "cpu")
    with pytest.raises(UserError, match="DSGAN checkpoint"):  # a generator is not a re-ID model
        ReidExtractor(trained_checkpoints["gan"], "cpu")


def test_model_modalities_reads_the_streams():
    from stage2_fusion.backbone import AGWBackbone

    class VisibleOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = AGWBackbone(("vis",), (1, 1, 1, 1), 8, 1, (0, 0, 0, 0))

    assert model_modalities(VisibleOnly()) == ("vis",)


def test_tsme_generator_recorded_moved_or_missing(trained_checkpoints, tmp_path):
    """A moved run directory still finds its generator (<run>/gan/gan.pt with the recorded
    SHA-256); a missing one is refused with the flag that fixes it."""
    state = torch.load(trained_checkpoints["tsme"], weights_only=True)
    state["partners"] = {**state["partners"], "generator": str(tmp_path / "gone" / "gan.pt")}
    payload = {k: v for k, v in state.items() if k not in ("kind", "format")}
    moved = tmp_path / "moved" / "fusion" / "reid.pt"
    save_checkpoint(moved, "reid", payload)
    with pytest.raises(UserError, match="--gan-checkpoint"):
        ReidExtractor(moved, "cpu")
    (tmp_path / "moved" / "gan").mkdir()
    shutil.copy(trained_checkpoints["gan"], tmp_path / "moved" / "gan" / "gan.pt")
    found = ReidExtractor(moved, "cpu")
    assert found.generators.sha256 == file_sha256(trained_checkpoints["gan"])
    images = np.asarray(trained_checkpoints["splits"]["tsme"].test.images[:4])
    original = ReidExtractor(trained_checkpoints["tsme"], "cpu")
    np.testing.assert_allclose(found.extract(images, "visible"), original.extract(images, "visible"), atol=1e-6)
    explicit = ReidExtractor(moved, "cpu", gan_checkpoint=trained_checkpoints["gan"])
    assert explicit.generators is not None


def test_extract_command_writes_features_and_paths(trained_checkpoints, sysu_tree, tmp_path):
    out = tmp_path / "gallery.npz"
    folder, single = sysu_tree / "cam1", sysu_tree / "cam2" / "0011" / "0001.jpg"
    (tmp_path / "README.txt").write_text("not an image")
    res = CliRunner().invoke(app, ["extract", "--checkpoint", str(trained_checkpoints["mso"]), "--images", str(folder), str(single),
                                   "--modality", "visible", "--out", str(out), "--device", "cpu", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    features = open_feature_file(out)
    expected_paths = sorted(str(p.resolve()) for p in folder.rglob("*.jpg")) + [str(single.resolve())]
    assert list(features.paths()) == expected_paths
    extractor = ReidExtractor(trained_checkpoints["mso"], "cpu")
    assert features.meta["checkpoint_sha256"] == extractor.sha256 == file_sha256(trained_checkpoints["mso"])
    assert (features.meta["method"], features.meta["modality"], features.meta["feature"]) == ("mso", "visible", extractor.feature)
    assert features.meta["image_size"] == extractor.image_size and features.meta["flip"] is False
    data = np.load(out, allow_pickle=False)  # a plain .npz: no pickle needed
    assert data["features"].dtype == np.float32 and data["features"].shape == (len(expected_paths), extractor.dim)
    np.testing.assert_allclose(data["features"], extractor.extract(expected_paths, "visible"), atol=1e-6)
    assert f"{len(expected_paths)} visible images" in res.stdout


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """``pipeline ARGS`` through the console entry point, in this process: (exit code, stderr lines)."""
    from pipelines.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["pipeline", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_extract_command_refuses_bad_inputs_in_one_line(trained_checkpoints, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    ck = str(trained_checkpoints["agw"])
    cases = [
        (["--images", str(folder), "--modality", "visible"], "broken.jpg cannot be read as an image"),
        (["--images", str(empty), "--modality", "visible"], "holds no image files"),
        (["--images", str(folder / "good.png"), "--modality", "thermal"], "modality 'thermal' is unknown"),
    ]
    for args, message in cases:
        out = tmp_path / "f.npz"
        code, lines = run_cli(["extract", "--checkpoint", ck, *args, "--out", str(out), "--device", "cpu"], capsys, monkeypatch)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
        assert not out.exists()  # nothing written, nothing skipped silently
