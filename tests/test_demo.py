"""Tests of the procedural demo dataset (common/demo/: identities, scenes, rendering, writing).

Layout, determinism, idempotence and atomicity run on small datasets; the size and the
modality-gap checks run on one default-size dataset generated once per module.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.demo import identities, rendering, scenes, writing
from common.demo.identities import INFRARED_CAMS, VISIBLE_CAMS
from common.demo.writing import GENERATOR_VERSION, is_complete_demo, make_demo
from common.errors import UserError

SMALL = dict(n_train=6, n_val=2, n_test=6)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_ids(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    assert len(lines) == 1, f"{path} must be one line"
    assert re.fullmatch(r"\d+(,\d+)*", lines[0]), lines[0]
    return [int(v) for v in lines[0].split(",")]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("small") / "demo", seed=3, **SMALL)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]], float]:
    calls: list[tuple[int, int]] = []
    start = time.perf_counter()
    out = make_demo(tmp_path_factory.mktemp("default") / "demo", progress=lambda d, t: calls.append((d, t)))
    seconds = time.perf_counter() - start
    print(f"default demo generated in {seconds:.1f} s")
    return out, calls, seconds


@pytest.fixture(scope="module")
def default_features(default_demo) -> dict[str, np.ndarray]:
    """Per image: pid, cam, torso luminance, and a person-centred 24x8 grey thumbnail."""
    root = default_demo[0]
    pids, cams, torso, thumbs = [], [], [], []
    for path in sorted(root.glob("cam*/*/*.jpg")):
        lum = np.asarray(Image.open(path), np.float32) @ LUMA
        h, w = lum.shape
        torso.append(lum[int(0.30 * h) : int(0.45 * h), int(0.38 * w) : int(0.62 * w)].mean())
        person = Image.fromarray(lum[int(0.1 * h) : int(0.95 * h), int(0.25 * w) : int(0.75 * w)].astype(np.uint8))
        thumbs.append(np.asarray(person.resize((8, 24), Image.BILINEAR), np.float32).ravel())
        pids.append(int(path.parent.name))
        cams.append(int(path.parent.parent.name[3:]))
    return {"pid": np.array(pids), "cam": np.array(cams), "torso": np.array(torso), "thumb": np.stack(thumbs)}


# --------------------------------------------------------------------------- layout


def test_layout_is_exactly_sysu(small: Path) -> None:
    top = {p.name for p in small.iterdir()}
    assert top == {f"cam{c}" for c in range(1, 7)} | {"exp", "demo_info.json", "aligned_nir"}
    visible = sorted(str(p.relative_to(small)) for c in VISIBLE_CAMS for p in (small / f"cam{c}").glob("*/*.jpg"))
    aligned = sorted(str(p.relative_to(small / "aligned_nir")) for p in (small / "aligned_nir").rglob("*.jpg"))
    assert aligned == visible, "every visible image (and nothing else) has its aligned near-infrared twin"
    assert {p.name for p in (small / "exp").iterdir()} == {"train_id.txt", "val_id.txt", "test_id.txt"}

    splits = {s: _read_ids(small / "exp" / f"{s}_id.txt") for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 6]
    listed = splits["train"] + splits["val"] + splits["test"]
    assert len(set(listed)) == len(listed), "splits overlap or repeat ids"
    assert all(1 <= i <= 533 for i in listed)

    cams_of: dict[int, set[int]] = {}
    n_images = 0
    for cam in range(1, 7):
        for pid_dir in (small / f"cam{cam}").iterdir():
            assert re.fullmatch(r"\d{4}", pid_dir.name), pid_dir
            names = sorted(p.name for p in pid_dir.iterdir())
            assert names == [f"{n:04d}.jpg" for n in range(1, len(names) + 1)], pid_dir
            cams_of.setdefault(int(pid_dir.name), set()).add(cam)
            for name in names:
                with Image.open(pid_dir / name) as img:
                    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 128)
                    img.load()
            n_images += len(names)
    assert set(cams_of) == set(listed), "id folders and split files disagree"
    for pid, cams in cams_of.items():
        assert cams & set(INFRARED_CAMS), f"id {pid} has no infrared image"
        assert len(cams & set(VISIBLE_CAMS)) >= 2, f"id {pid} is seen by fewer than 2 visible cameras"

    info = json.loads((small / "demo_info.json").read_text())
    assert info["generator_version"] == GENERATOR_VERSION and info["seed"] == 3 and info["images"] == n_images
    assert is_complete_demo(small, 3, **SMALL)
    assert not is_complete_demo(small, 4, **SMALL)
    assert not is_complete_demo(small, 3, n_train=7, n_val=2, n_test=6)
    assert not list(small.parent.glob(".demo.tmp-*")), "temporary folder left behind"


def test_read_by_the_sysu_reader(small: Path) -> None:
    sysu = pytest.importorskip("common.datasets.sysu")
    index = sysu.read_sysu(small, name="demo")
    ids = {s: _read_ids(small / "exp" / f"{s}_id.txt") for s in ("train", "val", "test")}
    assert {s.pid for s in index.train} == set(ids["train"] + ids["val"])
    assert {s.pid for s in index.test} == set(ids["test"])
    assert len(index.train) + len(index.test) == len(list(small.glob("cam*/*/*.jpg")))
    assert all((s.modality == "ir") == (s.cam in INFRARED_CAMS) for s in index.train + index.test)


def test_other_image_size(tmp_path: Path) -> None:
    out = make_demo(tmp_path / "d", seed=1, n_train=1, n_val=1, n_test=1, image_size=(96, 40))
    sizes = {Image.open(p).size for p in out.glob("cam*/*/*.jpg")}
    assert sizes == {(40, 96)}


def test_default_size_and_progress(default_demo) -> None:
    root, calls, _ = default_demo
    info = json.loads((root / "demo_info.json").read_text())
    ids = set()
    for s in ("train", "val", "test"):
        ids |= set(_read_ids(root / "exp" / f"{s}_id.txt"))
    assert len(ids) == 72
    n = len(list(root.glob("cam*/*/*.jpg")))
    assert 2000 <= n <= 3000 and info["images"] == n
    assert calls[-1] == (n, n) and [d for d, _ in calls] == list(range(1, n + 1))


def test_infrared_channels_equal_visible_not(small: Path) -> None:
    for cam in range(1, 7):
        diffs = []
        for path in sorted((small / f"cam{cam}").glob("*/*.jpg"))[:40]:
            a = np.asarray(Image.open(path), np.int16)
            diffs.append(max(np.abs(a[..., 0] - a[..., 1]).max(), np.abs(a[..., 1] - a[..., 2]).max()))
        if cam in INFRARED_CAMS:
            assert max(diffs) <= 3, f"cam{cam} images are not grey"
        else:
            assert min(diffs) >= 30, f"cam{cam} images look grey"


def test_distinct_identities() -> None:
    """No two of the 533 possible identities share their discrete attributes or heats."""
    discrete, heats = set(), set()
    for pid in range(1, 534):
        a = identities.identity_attributes(0, pid)
        discrete.add((a.top_pattern, a.top_colour, a.sleeve, a.bottom, a.bottom_colour, a.hair, a.accessory))
        heats.add(a.heat.round(3).tobytes())
    assert len(discrete) == 533 and len(heats) == 533


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = make_demo(tmp_path / "again", seed=3, **SMALL)
    assert _files(again) == _files(small)
    other = _files(make_demo(tmp_path / "other", seed=4, **SMALL))
    assert other["exp/test_id.txt"] != _files(small)["exp/test_id.txt"]


def test_identity_does_not_depend_on_split_sizes(small: Path, tmp_path: Path) -> None:
    fewer = make_demo(tmp_path / "fewer", seed=3, n_train=3, n_val=1, n_test=2)
    files = _files(fewer)
    images = {k: v for k, v in files.items() if k.endswith(".jpg")}
    assert images and set(images) <= set(_files(small))
    big = _files(small)
    assert all(big[k] == v for k, v in images.items())


# --------------------------------------------------------------------------- idempotence, safety


def test_second_call_is_a_no_op(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*")}

    def no_rendering(*args, **kwargs):
        raise AssertionError("a complete demo must not be rendered again")

    monkeypatch.setattr(writing, "_render_into", no_rendering)
    assert make_demo(small, seed=3, **SMALL) == small
    assert {p: p.stat().st_mtime_ns for p in small.rglob("*")} == before


def test_non_matching_folder_raises_and_is_kept(small: Path, tmp_path: Path) -> None:
    before = _files(small)
    with pytest.raises(UserError) as err:
        make_demo(small, seed=5, **SMALL)
    message = str(err.value)
    assert "\n" not in message and str(small) in message and "delete" in message
    assert _files(small) == before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=re.escape(str(mine))):
        make_demo(mine, seed=0, **SMALL)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError):
        make_demo(a_file, seed=0, **SMALL)
    assert a_file.read_text() == "x"


def test_empty_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = make_demo(tmp_path / "empty", seed=2, n_train=1, n_val=1, n_test=1)
    assert is_complete_demo(out, 2, n_train=1, n_val=1, n_test=1)


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    def stop(done: int, total: int) -> None:
        if done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_demo(tmp_path / "d", seed=0, **SMALL, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_demo(Path("/nonexistent/x"), seed=0, n_train=500, n_val=20, n_test=20)
    with pytest.raises(ValueError):
        make_demo(Path("/nonexistent/x"), seed=-1)
    with pytest.raises(ValueError):
        make_demo(Path("/nonexistent/x"), seed=0, n_val=0)
    with pytest.raises(TypeError):
        is_complete_demo(Path("/nonexistent/x"), 0, n_trian=3)


# --------------------------------------------------------------------------- modality gap


def test_infrared_brightness_follows_the_dye_not_the_luminance(default_features) -> None:
    """Per identity, the torso's mean near-infrared intensity is what its dye and fibre
    reflect (the dye table predicts it: r > 0.8), not its visible luminance (|r| < 0.45, so a
    grayscale copy cannot stand in for the translation), and it is a stable property of the
    identity (between-identity variance well above the within-identity variance).
    Measured: r(dye) 0.91, r(luminance) 0.15, ratio 3.7. With DYE_NIR replaced by the dyes'
    luminance, r(luminance) is 0.95 and the test fails."""
    f = default_features
    is_ir = np.isin(f["cam"], INFRARED_CAMS)
    ids = np.unique(f["pid"])
    vis = np.array([f["torso"][(f["pid"] == p) & ~is_ir].mean() for p in ids])
    ir = np.array([f["torso"][(f["pid"] == p) & is_ir].mean() for p in ids])
    idents = [identities.identity_attributes(0, int(p)) for p in ids]
    # the torso's materials: the main one, or both halves of a pattern
    top_nir = np.array([i.nir[identities.TOP_A] if i.top_pattern == "solid" else i.nir[[identities.TOP_A, identities.TOP_B]].mean() for i in idents])
    r_dye, r_luma = np.corrcoef(top_nir, ir)[0, 1], np.corrcoef(vis, ir)[0, 1]
    assert r_dye > 0.8, f"near-infrared torso brightness does not follow the dye table (r = {r_dye:.2f})"
    assert abs(r_luma) < 0.45, f"near-infrared torso brightness follows visible luminance (r = {r_luma:.2f})"
    within = np.mean([f["torso"][(f["pid"] == p) & is_ir].var() for p in ids])
    assert ir.var() / within > 2.0, "infrared torso intensity is not a stable identity property"


def test_dye_reflectance_is_shared_by_every_wearer_and_not_affine_in_luminance() -> None:
    """A dye's near-infrared reflectance is one number, the same for every identity wearing it
    (up to its fibre's factor), and the 20 dyes' reflectances are far from any affine function
    of their visible luminance (R^2 of the least-squares line < 0.3; measured 0.19)."""
    seen: dict[tuple[int, int], set[float]] = {}
    for pid in range(1, 534):
        ident = identities.identity_attributes(0, pid)
        for m in identities.GARMENTS:
            dye, fibre = int(ident.dyes[m]), int(ident.fibres[m])
            assert ident.nir[m] == pytest.approx(identities.DYE_NIR[dye] * identities.FIBRE_NIR[fibre])
            seen.setdefault((dye, fibre), set()).add(round(float(ident.nir[m]), 6))
    assert len(seen) >= 60 and all(len(v) == 1 for v in seen.values())
    luma = identities._PALETTE @ LUMA
    design = np.stack([luma, np.ones_like(luma)], axis=1)
    coef, *_ = np.linalg.lstsq(design, identities.DYE_NIR, rcond=None)
    residual = identities.DYE_NIR - design @ coef
    r2 = 1.0 - residual.var() / identities.DYE_NIR.var()
    assert r2 < 0.3, f"dye near-infrared reflectance is nearly affine in luminance (R^2 = {r2:.2f})"
    assert (identities.DYE_NIR > 0.6).sum() >= 12 and (identities.DYE_NIR < 0.35).sum() >= 3  # most bright, a few dark


def _flat_nir(reflectance: float, seed: int = 0, **camera) -> np.ndarray:
    """A near-infrared image of one garment filling the frame (no body shading): what the
    lamp, exposure and sensor make of a flat reflectance. float (H, W) in [0, 1]."""
    size = (128, 64)
    ident = identities.identity_attributes(0, 5)
    cam = dataclasses.replace(scenes.camera_attributes(0, 3, size), **camera)
    pose, lab, x = rendering._draw(ident, cam, np.random.default_rng(seed), size)
    garment = int(identities.GARMENTS[0])
    flat = dataclasses.replace(ident, nir=np.full_like(ident.nir, reflectance))
    img = rendering._nir_image(flat, cam, pose, np.full_like(lab, garment), np.zeros_like(x), np.random.default_rng(seed), size)
    return img.astype(np.float64) / 255.0


def test_near_infrared_lamp_falls_off_from_its_centre() -> None:
    """Pixel = exposure x (1 - k r^2) x reflectance, r^2 the squared distance from the lit
    centre in half-image units (0 there, about 1 in the corners): the noiseless image is that
    map up to the per-image exposure, to one grey level."""
    k, centre = 0.4, (0.42, 0.58)  # lit centre (y, x) as image fractions, off the middle
    img = _flat_nir(0.6, nir_falloff=k, nir_centre=centre, nir_gain=0.8, nir_read_noise=0.0, nir_shot_noise=0.0, nir_blur=0.0)
    h, w = img.shape
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    lamp = 1.0 - k * (((ys - centre[0]) / 0.5) ** 2 + ((xs - centre[1]) / 0.5) ** 2) / 2.0
    model = lamp * 0.6
    exposure = (img * model).sum() / (model * model).sum()  # gain x the image's jitter, least squares
    assert 0.8 * 0.85 - 0.01 <= exposure <= 0.8 * 1.15 + 0.01
    assert np.abs(img - exposure * lamp * 0.6).max() <= 1.5 / 255
    cy, cx = int(centre[0] * h), int(centre[1] * w)
    assert img[-1, 0] < 0.6 * img[cy, cx]  # the far corner clearly darker than the lit centre


def test_near_infrared_sensor_adds_shot_and_read_noise() -> None:
    """Noise std = sqrt(shot x signal + read^2): measured on flat dark and bright garments
    within 10 % of the formula, and larger on the bright one (shot noise grows with signal)."""
    shot, read = 0.002, 0.02
    stds = []
    for reflectance in (0.15, 0.8):
        img = _flat_nir(reflectance, nir_falloff=0.0, nir_gain=1.0, nir_read_noise=read, nir_shot_noise=shot, nir_blur=0.0)
        signal = img.mean()
        expected = np.sqrt(shot * signal + read**2 + (1 / 255) ** 2 / 12)  # + quantisation
        assert img.std() == pytest.approx(expected, rel=0.1), (reflectance, img.std(), expected)
        stds.append(img.std())
    assert stds[1] > 1.3 * stds[0]


def test_aligned_twin_shows_the_same_scene(small: Path) -> None:
    """The aligned near-infrared image has the visible image's geometry: its edges line up
    with the visible image's far better than with another image of the same identity and
    camera (median correlation of gradient magnitudes)."""
    def grad(path: Path) -> np.ndarray:
        g = np.asarray(Image.open(path), np.float32) @ LUMA
        return np.hypot(np.diff(g, axis=0)[:, :-1], np.diff(g, axis=1)[:-1, :]).ravel()

    same, other = [], []
    for folder in sorted((small / "cam1").iterdir())[:6]:
        a, b = folder / "0001.jpg", folder / "0002.jpg"
        twin_a = small / "aligned_nir" / "cam1" / folder.name / "0001.jpg"
        same.append(np.corrcoef(grad(a), grad(twin_a))[0, 1])
        other.append(np.corrcoef(grad(b), grad(twin_a))[0, 1])
    assert np.median(same) > 0.4 and np.median(same) > np.median(other) + 0.2, (same, other)


def test_aligned_rendering_leaves_the_visible_image_unchanged() -> None:
    ident = identities.identity_attributes(0, 5)
    cam = scenes.camera_attributes(0, 4, (128, 64))
    alone = rendering.render_visible(ident, cam, np.random.default_rng(2), (128, 64))
    visible, twin = rendering.render_visible(ident, cam, np.random.default_rng(2), (128, 64), np.random.default_rng(9))
    assert np.array_equal(alone, visible) and twin.shape == (128, 64) and twin.dtype == np.uint8


def test_thermal_physics_option(tmp_path: Path) -> None:
    """--physics thermal writes the version-2 heat rendering (and aligned_thermal twins); the
    infrared images differ from the near-infrared ones of the same seed."""
    nir = make_demo(tmp_path / "nir", seed=1, n_train=1, n_val=1, n_test=1)
    thermal = make_demo(tmp_path / "thermal", seed=1, n_train=1, n_val=1, n_test=1, physics="thermal")
    assert (thermal / "aligned_thermal").is_dir() and not (thermal / "aligned_nir").exists()
    assert json.loads((thermal / "demo_info.json").read_text())["physics"] == "thermal"
    assert is_complete_demo(thermal, 1, n_train=1, n_val=1, n_test=1, physics="thermal")
    assert not is_complete_demo(thermal, 1, n_train=1, n_val=1, n_test=1)
    ir = sorted(p.relative_to(nir) for p in nir.glob("cam3/*/*.jpg"))
    assert ir and all((nir / p).read_bytes() != (thermal / p).read_bytes() for p in ir)
    vis = sorted(p.relative_to(nir) for p in nir.glob("cam1/*/*.jpg"))
    assert all((nir / p).read_bytes() == (thermal / p).read_bytes() for p in vis)  # visible light is the same
    with pytest.raises(ValueError):
        make_demo(tmp_path / "x", seed=1, physics="heat")


def test_stand_in_identities_are_not_demo_identities() -> None:
    """The ImageNet stand-in's identities take attribute cells no demo pid has."""
    def key(a: identities.Identity) -> tuple:
        return (a.top_pattern, a.top_colour, a.sleeve, a.bottom, a.bottom_colour, a.hair, a.accessory)

    demo_keys = {key(identities.identity_attributes(0, pid)) for pid in range(1, 534)}
    stand_in = [identities.pretrain_identity(0, k) for k in range(300)]
    assert not demo_keys & {key(a) for a in stand_in}
    assert len({key(a) for a in stand_in}) == 300 and all(a.pid > 533 for a in stand_in)
    images, labels = rendering.pretrain_images(0, 3, 2, (64, 32))
    assert images.shape == (6, 64, 32, 3) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 1, 1, 2, 2]
    again, _ = rendering.pretrain_images(0, 3, 2, (64, 32))
    assert np.array_equal(images, again)


def test_raw_pixels_match_within_but_not_across_modalities(default_features) -> None:
    """Nearest neighbour on raw grey thumbnails: visible->visible (other cameras) Rank-1 is
    far above chance, infrared->visible Rank-1 is well below it (measured on demo version 3:
    0.38 vs 0.05 with chance 0.014; a demo whose infrared were the grey of the visible colours
    would match across modalities about as well as within, and fail this test)."""
    f = default_features
    is_ir = np.isin(f["cam"], INFRARED_CAMS)
    z = f["thumb"] - f["thumb"].mean(axis=1, keepdims=True)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T

    def rank1(queries: np.ndarray, gallery_of) -> float:
        hits = []
        for i in np.flatnonzero(queries):
            g = np.flatnonzero(gallery_of(i))
            hits.append(f["pid"][g[np.argmax(sim[i, g])]] == f["pid"][i])
        return float(np.mean(hits))

    chance = 1.0 / len(np.unique(f["pid"]))
    vis_vis = rank1(~is_ir, lambda i: ~is_ir & (f["cam"] != f["cam"][i]))
    ir_vis = rank1(is_ir, lambda i: ~is_ir)
    assert vis_vis > 10 * chance, f"visible images of an identity do not resemble each other ({vis_vis:.2f})"
    assert ir_vis < 0.4 * vis_vis, f"raw pixels match across modalities too well ({ir_vis:.2f} vs {vis_vis:.2f})"


def test_ir_rendering_ignores_colour() -> None:
    """Two identities differing only in visible colours give identical infrared images."""
    ident = identities.identity_attributes(0, 1)
    recoloured = dataclasses.replace(ident, colours=np.roll(ident.colours, 3, axis=0))
    cam = scenes.camera_attributes(0, 3, (128, 64))
    a = rendering.render_infrared(ident, cam, np.random.default_rng(1), (128, 64))
    b = rendering.render_infrared(recoloured, cam, np.random.default_rng(1), (128, 64))
    assert a.shape == (128, 64) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    vis = scenes.camera_attributes(0, 1, (128, 64))
    c = rendering.render_visible(ident, vis, np.random.default_rng(1), (128, 64))
    d = rendering.render_visible(recoloured, vis, np.random.default_rng(1), (128, 64))
    assert c.shape == (128, 64, 3) and not np.array_equal(c, d)
