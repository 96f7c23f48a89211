"""The bad-input matrix, through the CLI: every case is answered by one line that names the
thing and the fix, with exit status 2, never a traceback; nothing already written is lost.

Each case runs ``pipelines.cli.main`` in-process (as the ``pipeline`` script does) on tiny
trees with real JPEG files. Decisions documented here and in the README:
* a truncated or non-image JPEG is refused when the split is first decoded (before any
  training), naming the file; nothing is skipped silently;
* grayscale, RGBA and 16-bit infrared PNG files are read (16-bit stretched to 0-255);
* K larger than any identity's image count of either modality is refused.
"""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import dump_config
from stage2_fusion.methods import load_config
from pipelines import cli
from tests.conftest import TINY_OVERRIDES, make_sysu_tree, write_jpeg


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``pipeline ARGS``; returns (exit status, the error line) after checking the contract."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["pipeline", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, err
    return exited.value.code, (errors[0] if errors else "")


def expect_refusal(monkeypatch, capsys, fragment: str, *args: str) -> str:
    code, line = run_cli(monkeypatch, capsys, *args)
    assert code == 2, (args, line)
    assert fragment in line, (fragment, line)
    return line


@pytest.fixture
def tiny_config(tmp_path, tiny_cfg) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_config(tiny_cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny TSME run (GAN, partner cache, re-ID) on a SYSU-layout tree."""
    from pipelines.run_all import run_all

    root = make_sysu_tree(tmp_path_factory.mktemp("bad") / "SYSU-MM01", [1, 2, 3, 5, 7, 8], [9, 10], [11, 12, 14, 15])
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    run_all(cfg, dataset="sysu", data_root=root, run_dir=run_dir, device=torch.device("cpu"), method="tsme")
    return root, run_dir


def _copy_tree(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


# --------------------------------------------------------------------------- data


def test_missing_and_empty_data_root(monkeypatch, capsys, tmp_path, tiny_config):
    expect_refusal(monkeypatch, capsys, "does not exist", "run-all", "--dataset", "sysu", "--data-root", str(tmp_path / "nowhere"),
                   "--config", str(tiny_config), "--run-dir", str(tmp_path / "r1"))
    (tmp_path / "empty").mkdir()
    expect_refusal(monkeypatch, capsys, "is not a SYSU-MM01 copy: cam1, cam2, cam3, cam4, cam5, cam6 missing", "train-fusion",
                   "--dataset", "sysu", "--data-root", str(tmp_path / "empty"), "--method", "agw", "--config", str(tiny_config),
                   "--run-dir", str(tmp_path / "r2"))
    expect_refusal(monkeypatch, capsys, "--data-root is required", "run-all", "--dataset", "llcm", "--run-dir", str(tmp_path / "r3"))


def test_wrong_dataset_layout(monkeypatch, capsys, tmp_path, trained, tiny_config):
    sysu, _ = trained
    line = expect_refusal(monkeypatch, capsys, "is missing", "check-data", "--dataset", "regdb", "--data-root", str(sysu))
    assert "idx" in line or "Visible" in line or "Thermal" in line
    expect_refusal(monkeypatch, capsys, "is missing", "check-data", "--dataset", "llcm", "--data-root", str(sysu))


def test_id_list_naming_missing_folders(monkeypatch, capsys, tmp_path, trained, tiny_config):
    root = _copy_tree(trained[0], tmp_path / "SYSU-MM01")
    (root / "exp" / "test_id.txt").write_text("11,12,14,15,333")
    expect_refusal(monkeypatch, capsys, "1 ids listed in exp/test_id.txt have no images in any camera folder (first: 0333",
                   "check-data", "--dataset", "sysu", "--data-root", str(root))


@pytest.mark.parametrize("damage", ["truncated", "not-an-image"])
def test_corrupt_jpeg_is_named_before_training(damage, monkeypatch, capsys, tmp_path, trained, tiny_config):
    root = _copy_tree(trained[0], tmp_path / "SYSU-MM01")
    bad = root / "cam4" / "0007" / "0002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"<html>not a jpeg</html>")
    monkeypatch.setenv("VIREID_CACHE", str(tmp_path / "cache"))
    line = expect_refusal(monkeypatch, capsys, "is corrupt", "train-fusion", "--dataset", "sysu", "--data-root", str(root),
                          "--method", "agw", "--config", str(tiny_config), "--run-dir", str(tmp_path / "r"))
    assert str(bad) in line and "replace it" in line
    assert not (tmp_path / "r" / "fusion").exists()  # refused before any training
    assert not list((tmp_path / "cache").glob("*.tmp"))  # no half-decoded cache left


def test_images_of_other_modes_are_read(tmp_path):
    from common.data.images import read_image

    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # (16, 16)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # red, fully transparent: the colour is kept, the alpha dropped
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    raw = (7000 + 10 * np.arange(256, dtype=np.uint16).reshape(16, 16))  # a 16-bit thermal frame, 7000..9550
    Image.fromarray(raw).save(tmp_path / "thermal16.png")
    assert Image.open(tmp_path / "thermal16.png").mode == "I;16"
    g = read_image(tmp_path / "gray.png", (16, 16))
    assert g.shape == (16, 16, 3) and (g[..., 0] == g[..., 2]).all() and (g[..., 0] == gray).all()
    assert (read_image(tmp_path / "rgba.png", (16, 16)) == [200, 0, 0]).all()
    t = read_image(tmp_path / "thermal16.png", (16, 16))
    # stretched from [7000, 9550] to [0, 255], not clipped to white: row r col c -> round((10 (16 r + c)) * 255 / 2550)
    assert t[0, 0, 0] == 0 and t[-1, -1, 0] == 255 and t[8, 0, 0] == round(128 * 10 * 255 / 2550)
    assert len(np.unique(t[..., 0])) > 200


# --------------------------------------------------------------------------- checkpoints and caches


def test_checkpoint_of_another_kind_method_or_a_corrupt_one(monkeypatch, capsys, tmp_path, trained, tiny_config):
    root, run = trained
    expect_refusal(monkeypatch, capsys, "is a stage-2 re-ID checkpoint", "generate-pairs", "--checkpoint",
                   str(run / "fusion" / "reid.pt"), "--dataset", "sysu", "--data-root", str(root), "--out", str(tmp_path / "p"))
    expect_refusal(monkeypatch, capsys, "is a stage-1 DSGAN checkpoint", "test", "--checkpoint", str(run / "gan" / "gan.pt"),
                   "--dataset", "sysu", "--data-root", str(root))
    truncated = tmp_path / "reid.pt"
    truncated.write_bytes((run / "fusion" / "reid.pt").read_bytes()[:4096])
    expect_refusal(monkeypatch, capsys, "cannot be read", "test", "--checkpoint", str(truncated), "--dataset", "sysu",
                   "--data-root", str(root))
    # another method's training state in the run directory: never resumed into, never overwritten
    other = tmp_path / "other"
    shutil.copytree(run / "fusion", other / "fusion")
    (other / "fusion" / "reid.pt").unlink()
    before = (other / "fusion" / "last.pt").read_bytes()
    expect_refusal(monkeypatch, capsys, "belongs to a run with other settings", "train-fusion", "--dataset", "sysu",
                   "--data-root", str(root), "--method", "agw", "--config", str(tiny_config), "--run-dir", str(other))
    assert (other / "fusion" / "last.pt").read_bytes() == before


def test_stale_or_half_written_partner_cache(monkeypatch, capsys, tmp_path, trained, tiny_config):
    root, run = trained
    # made for the full tree; this copy has one identity less: another dataset fingerprint
    smaller = _copy_tree(root, tmp_path / "SYSU-MM01")
    shutil.rmtree(smaller / "cam1" / "0001")
    line = expect_refusal(monkeypatch, capsys, "partner cache", "train-fusion", "--dataset", "sysu", "--data-root", str(smaller),
                          "--method", "tsme", "--partners", str(run / "partner_cache"), "--config", str(tiny_config),
                          "--run-dir", str(tmp_path / "r1"))
    assert "generate-pairs" in line  # the rebuild command
    half = tmp_path / "half"
    shutil.copytree(run / "partner_cache", half)
    (half / "manifest.json").unlink()
    expect_refusal(monkeypatch, capsys, "generate-pairs", "train-fusion", "--dataset", "sysu", "--data-root", str(root),
                   "--method", "tsme", "--pairs", str(half), "--config", str(tiny_config), "--run-dir", str(tmp_path / "r2"))


# --------------------------------------------------------------------------- where runs write


def test_unwritable_run_directory(monkeypatch, capsys, tmp_path, trained, tiny_config):
    (tmp_path / "a-file").write_text("not a folder")
    expect_refusal(monkeypatch, capsys, "cannot write", "train-fusion", "--dataset", "sysu", "--data-root", str(trained[0]),
                   "--method", "agw", "--config", str(tiny_config), "--run-dir", str(tmp_path / "a-file" / "run"))


def test_full_disk_while_writing_a_checkpoint_keeps_the_last_complete_one(monkeypatch, capsys, tmp_path, trained, tiny_config):
    import common.atomic as atomic

    real_fsync, calls = atomic.os.fsync, {"last": 0}

    def fsync_or_enospc(fd):
        target = Path(f"/proc/self/fd/{fd}").resolve().name
        if target.startswith(".last.pt."):
            calls["last"] += 1
            if calls["last"] == 2:  # the second epoch's last.pt: the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_or_enospc)
    run = tmp_path / "run"
    expect_refusal(monkeypatch, capsys, f"no space left on the device writing {run / 'fusion' / 'last.pt'}", "train-fusion",
                   "--dataset", "sysu", "--data-root", str(trained[0]), "--method", "agw", "--config", str(tiny_config),
                   "--run-dir", str(run))
    assert load_checkpoint(run / "fusion" / "last.pt", "reid")["epoch"] == 1  # the complete epoch-1 file survives
    assert not [p for p in (run / "fusion").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    code, _ = run_cli(monkeypatch, capsys, "train-fusion", "--dataset", "sysu", "--data-root", str(trained[0]), "--method", "agw",
                      "--config", str(tiny_config), "--run-dir", str(run))  # space freed: resumes and finishes
    assert code == 0 and load_checkpoint(run / "fusion" / "reid.pt", "reid")["epoch"] == 2


# --------------------------------------------------------------------------- configuration and device


@pytest.mark.parametrize("table, fragment", [
    ("[fusion.recipes.agw]\nlearning_rate = 0.1\n", "unknown config key 'fusion.recipes.agw.learning_rate'"),
    ("[fusion.recipes.agw]\nlr = -0.1\n", "'fusion.recipes.agw.lr' = -0.1 is out of range: it must be > 0"),
    ("[fusion.recipes.agw]\nepochs = 0\n", "'fusion.recipes.agw.epochs' = 0 is out of range: it must be >= 1"),
    ("[gan]\nbatch_size = 0\n", "'gan.batch_size' = 0 is out of range"),
    ("[fusion.recipes.agw]\nflip_p = 1.5\n", "a probability in [0, 1]"),
])
def test_bad_config_values(table, fragment, monkeypatch, capsys, tmp_path, trained):
    path = tmp_path / "bad.toml"
    path.write_text(table)
    expect_refusal(monkeypatch, capsys, fragment, "train-fusion", "--dataset", "sysu", "--data-root", str(trained[0]),
                   "--method", "agw", "--config", str(path), "--run-dir", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_k_larger_than_any_identity_holds(monkeypatch, capsys, tmp_path, trained):
    import copy

    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["fusion"]["recipes"]["agw"]["images_per_id"] = 9  # the tree has 8 visible, 4 infrared per identity
    path = tmp_path / "k.toml"
    path.write_text(dump_config(load_config("demo", overrides=overrides)))
    expect_refusal(monkeypatch, capsys, "images_per_id (K) = 9 but no training identity has more than 8 images", "train-fusion",
                   "--dataset", "sysu", "--data-root", str(trained[0]), "--method", "agw", "--config", str(path),
                   "--run-dir", str(tmp_path / "r"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_where_there_is_none(monkeypatch, capsys, tmp_path, trained, tiny_config):
    expect_refusal(monkeypatch, capsys, "--device cuda was asked for but PyTorch sees no CUDA GPU", "test", "--checkpoint",
                   str(trained[1] / "fusion" / "reid.pt"), "--dataset", "sysu", "--data-root", str(trained[0]), "--device", "cuda")
