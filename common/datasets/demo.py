"""A small procedural visible-infrared re-ID dataset in SYSU-MM01's on-disk layout.

The demo dataset lets the whole toolkit run (and be tested) without downloading SYSU-MM01
(Wu et al., ICCV 2017, "RGB-Infrared Cross-Modality Person Re-Identification"). It is
written *exactly* in SYSU-MM01's layout, so the SYSU-MM01 reader reads it unchanged::

    OUT/cam1/0001/0001.jpg ... OUT/cam6/<pid %04d>/<n %04d>.jpg   n = 0001, 0002, ... per (cam, pid)
    OUT/exp/train_id.txt    one line of comma-separated ids, e.g. "3,7,12"
    OUT/exp/val_id.txt      same
    OUT/exp/test_id.txt     same
    OUT/demo_info.json      generator version, arguments and image count; written last

Cameras 1, 2, 4 and 5 are visible (RGB), 3 and 6 infrared, as in SYSU-MM01: cam1 and cam2 are
indoor rooms, cam3 is an infrared camera in cam2's room, cam4 ("gate") and cam5 ("garden") are
outdoor visible cameras and cam6 is an outdoor infrared camera. Infrared images are stored as
3-channel JPEGs whose channels are equal, like SYSU-MM01's.

What is drawn
-------------
Every image is a pedestrian drawn from body-local coordinates (``u`` down the body from the
top of the head, ``x`` across it, both in units of the person's height) into a *material
label map*: background, skin, hair, hat, two top-garment materials, two bottom-garment
materials, shoes and bag. Garment patterns (solid, horizontal or vertical stripes, checks)
decide which of a garment's two materials covers a pixel.

* Per identity (fixed across cameras): stature, head size, shoulder and hip width, leg
  length, sleeve length, trousers / shorts / skirt, garment patterns with their stripe
  frequency and phase, a visible colour per material, hair (short, long, or a hat),
  accessory (none, backpack, shoulder bag on the left or right) and a *thermal profile*: the
  heat (infrared brightness) of each material, drawn independently of its visible colour.
  Skin is hot, hair warm, bags cold; a garment's main material has a heat uniform in
  [0.2, 0.9], its pattern material one 0.25-0.45 above or below it (random side), and the
  top and bottom garments differ by at least 0.15, so garment boundaries and patterns show
  in infrared as they do in visible light (a pattern's two colours also differ in
  luminance).
* Per camera (fixed for a seed): a background scene (walls, floor and panels indoors; sky,
  foliage, gate bars, pavement or grass outdoors; cool textured heat scenes for infrared),
  lighting gain and colour cast, the person's typical scale and foot line, blur and noise.
* Per image: scale (+-10 %) and position jitter, lean, walking pose (arm swing, leg spread,
  a lifted foot), front or back view, a horizontal flip with p = 0.5 (which mirrors the bag
  side), lighting jitter and the noise realisation.

The modality gap is real: a visible image is material colour x shading x lighting, an
infrared image is material heat mapped through the camera's gain, offset, bloom and noise.
A garment's visible brightness therefore says nothing about its infrared brightness: which
of a pattern's stripes is bright flips independently between modalities. What carries
across modalities is geometry: body shape, skirt versus trousers, sleeve length, stripe
orientation and frequency, hair shape and accessory shape. Raw pixels match poorly across
modalities; a network has to learn the shared cues. (Version 1 drew all garment heats
independently, so patterns and garment boundaries often vanished in infrared; a network
trained from scratch on a few dozen identities then learned colour and heat codes that
did not transfer across modalities, Rank-1 near chance.)

Determinism: every random draw comes from ``np.random.SeedSequence(seed, spawn_key=...)``
keyed by what it describes (the identity number, the camera, the image), so the same
arguments give byte-identical files, and an identity looks the same whatever the split
sizes. The discrete attributes of all 533 possible identities are distinct by construction
(each identity gets its own cell of the attribute grid).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from common.errors import UserError

GENERATOR_VERSION: int = 2
"""Bump when the rendering changes: a folder made by another version is not reused."""

VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
INFRARED_CAMS: tuple[int, ...] = (3, 6)
MAX_PID = 533  # SYSU-MM01's identity numbers run from 1 to 533
JPEG_QUALITY = 90
INFO_FILE = "demo_info.json"
_PARAM_DEFAULTS: dict[str, object] = {"n_train": 32, "n_val": 8, "n_test": 32, "image_size": (128, 64)}

# Keys of the independent random streams (first element of each SeedSequence spawn_key).
_S_IDS, _S_SIGNATURE, _S_IDENTITY, _S_PRESENCE, _S_CAMERA, _S_ROOM, _S_IMAGE = range(7)

# Materials of the label map.
BG, SKIN, HAIR, HAT, TOP_A, TOP_B, BOT_A, BOT_B, SHOES, BAG = range(10)
N_MATERIALS = 10

PATTERNS = ("solid", "hstripes", "vstripes", "checks")
SLEEVES = ("short", "long")
BOTTOMS = ("trousers", "shorts", "skirt")
HAIRS = ("short", "long", "hat")
ACCESSORIES = ("none", "backpack", "bag_left", "bag_right")

_PALETTE = np.array(
    [
        (25, 25, 28), (235, 235, 230), (128, 128, 128), (62, 62, 68), (30, 40, 90),
        (40, 90, 190), (140, 180, 220), (180, 30, 35), (110, 25, 40), (230, 150, 170),
        (230, 120, 40), (230, 200, 60), (40, 130, 60), (110, 110, 50), (190, 170, 120),
        (110, 70, 40), (110, 60, 140), (220, 200, 170), (70, 95, 140), (30, 120, 120),
    ],
    dtype=np.float32,
) / 255.0
_SKIN_TONES = np.array(
    [(255, 219, 172), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36)], np.float32
) / 255.0
_HAIR_COLOURS = np.array(
    [(20, 18, 18), (45, 30, 22), (90, 60, 35), (190, 160, 100), (150, 150, 150)], np.float32
) / 255.0
# Radices of the discrete attribute grid: top pattern, top colour, sleeve, bottom kind,
# bottom colour, hair, accessory. 4 * 20 * 2 * 3 * 20 * 3 * 4 = 57,600 cells >> 533 ids.
_RADICES = (len(PATTERNS), len(_PALETTE), len(SLEEVES), len(BOTTOMS), len(_PALETTE), len(HAIRS), len(ACCESSORIES))


def _rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream named by ``key`` under ``seed`` (independent of every other key)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True, eq=False)
class Identity:
    """Everything about one person that stays the same across cameras.

    Lengths are fractions of the person's height. ``top_colour`` / ``bottom_colour`` are the
    palette indices of the garments' first materials. ``colours`` is float32 (N_MATERIALS, 3)
    in [0, 1] (visible reflectance), ``heat`` float32 (N_MATERIALS,) in [0, 1] (infrared).
    """

    pid: int
    stature: float
    head_rx: float
    head_ry: float
    shoulder_w: float
    hip_w: float
    hip_u: float
    arm_r: float
    arm_abduction: float
    leg_r: float
    sleeve: str
    top_colour: int
    top_pattern: str
    top_freq: float
    top_phase: float
    bottom: str
    bottom_colour: int
    bottom_pattern: str
    bottom_freq: float
    bottom_phase: float
    skirt_len: float
    hair: str
    accessory: str
    backpack_w: float
    backpack_h: float
    colours: np.ndarray
    heat: np.ndarray


@lru_cache(maxsize=8)
def _signatures(seed: int) -> np.ndarray:
    """Distinct cells of the discrete attribute grid for pids 1..533: int64 (533, 7)."""
    cells = _rng(seed, _S_SIGNATURE).choice(int(np.prod(_RADICES)), size=MAX_PID, replace=False)
    digits = np.empty((MAX_PID, len(_RADICES)), np.int64)
    for i, radix in enumerate(_RADICES):
        digits[:, i] = cells % radix
        cells = cells // radix
    return digits


_LUMA = _PALETTE @ np.array([0.299, 0.587, 0.114], np.float32)


def _other_colour(rng: np.random.Generator, avoid: int) -> int:
    """A palette index whose luminance differs from ``avoid``'s by >= 0.2 (a pattern's two
    colours stay distinguishable in grayscale)."""
    choices = np.flatnonzero(np.abs(_LUMA - _LUMA[avoid]) >= 0.2)
    return int(rng.choice(choices))


_FABRIC_HEAT = np.array([0.22, 0.45, 0.68, 0.9], np.float32)  # e.g. wool, denim, cotton, synthetic


def _contrasting_heat(rng: np.random.Generator, base: float) -> float:
    """A heat 0.25-0.45 above or below ``base`` (random side that fits in [0.12, 0.95]):
    the second material of a patterned garment, so the pattern shows in infrared too."""
    step = rng.uniform(0.25, 0.45)
    sides = [h for h in (base + step, base - step) if 0.12 <= h <= 0.95]
    return float(sides[int(rng.integers(len(sides)))]) if sides else float(np.clip(base + step, 0.12, 0.95))


def identity_attributes(seed: int, pid: int) -> Identity:
    """The appearance of identity ``pid`` (1..533); depends only on ``(seed, pid)``."""
    top_pat, top_c, sleeve, bottom, bot_c, hair, acc = (int(v) for v in _signatures(seed)[pid - 1])
    rng = _rng(seed, _S_IDENTITY, pid)
    u = rng.uniform
    bottom_pat = int(rng.choice(len(PATTERNS), p=(0.55, 0.15, 0.15, 0.15)))

    colours = np.zeros((N_MATERIALS, 3), np.float32)
    colours[SKIN] = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    colours[HAIR] = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]
    colours[HAT] = _PALETTE[rng.integers(len(_PALETTE))]
    colours[TOP_A] = _PALETTE[top_c]
    colours[TOP_B] = _PALETTE[_other_colour(rng, top_c)]
    colours[BOT_A] = _PALETTE[bot_c]
    colours[BOT_B] = _PALETTE[_other_colour(rng, bot_c)]
    colours[SHOES] = _PALETTE[rng.choice([0, 1, 2, 3, 15])]
    colours[BAG] = _PALETTE[rng.choice([0, 3, 4, 7, 15, 12, 16])]
    colours = np.clip(colours * u(0.92, 1.08, (N_MATERIALS, 3)), 0.0, 1.0).astype(np.float32)

    heat = np.zeros(N_MATERIALS, np.float32)  # independent of the colours above
    heat[SKIN] = u(0.92, 1.0)
    heat[HAIR] = u(0.55, 0.7)
    heat[HAT] = u(0.3, 0.6)
    # garment materials: one of a few fabrics, each with its typical heat; a garment's pattern
    # uses a second fabric, and the bottom garment a fabric other than the top's main one
    top_a, top_b = rng.choice(len(_FABRIC_HEAT), 2, replace=False)
    bot_a = rng.choice([f for f in range(len(_FABRIC_HEAT)) if f != top_a])
    bot_b = rng.choice([f for f in range(len(_FABRIC_HEAT)) if f != bot_a])
    heat[[TOP_A, TOP_B, BOT_A, BOT_B]] = _FABRIC_HEAT[[top_a, top_b, bot_a, bot_b]] + u(-0.03, 0.03, 4)
    heat[SHOES] = u(0.25, 0.5)
    heat[BAG] = u(0.1, 0.25)

    return Identity(
        pid=pid, stature=u(0.86, 1.08), head_rx=u(0.042, 0.058), head_ry=u(0.056, 0.072),
        shoulder_w=u(0.095, 0.15), hip_w=u(0.07, 0.12), hip_u=u(0.45, 0.55),
        arm_r=u(0.022, 0.032), arm_abduction=u(0.04, 0.16), leg_r=u(0.04, 0.056),
        sleeve=SLEEVES[sleeve], top_colour=top_c, top_pattern=PATTERNS[top_pat], top_freq=u(6.0, 14.0),
        top_phase=u(0.0, 1.0), bottom=BOTTOMS[bottom], bottom_colour=bot_c, bottom_pattern=PATTERNS[bottom_pat],
        bottom_freq=u(8.0, 16.0), bottom_phase=u(0.0, 1.0), skirt_len=u(0.14, 0.26),
        hair=HAIRS[hair], accessory=ACCESSORIES[acc], backpack_w=u(0.8, 1.0),
        backpack_h=u(0.2, 0.3), colours=colours, heat=heat,
    )


def _camera_presence(seed: int, pid: int) -> dict[int, int]:
    """Image count per camera of identity ``pid``: >= 2 visible cameras and >= 1 infrared one."""
    rng = _rng(seed, _S_PRESENCE, pid)
    while True:
        vis = [c for c in VISIBLE_CAMS if rng.random() < 0.85]
        if len(vis) >= 2:
            break
    ir = list(INFRARED_CAMS) if rng.random() < 0.75 else [INFRARED_CAMS[int(rng.integers(2))]]
    counts = {c: int(rng.integers(4, 9)) for c in vis}
    counts.update({c: int(rng.integers(5, 10)) for c in ir})
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- cameras


@dataclass(frozen=True, eq=False)
class Camera:
    """Fixed properties of one camera.

    ``background`` is float32 (Hc, Wc, 3) colours in [0, 1] for visible cameras and float32
    (Hc, Wc) heat in [0, 1] for infrared ones, larger than an image so that each image shows
    a different crop of the same scene.
    """

    cam: int
    infrared: bool
    outdoor: bool
    background: np.ndarray
    gain: float
    cast: np.ndarray
    scale: float
    foot: float
    blur: float
    noise: float
    ir_offset: float
    bloom: float


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Bilinearly interpolated random grid: float32 (h, w), roughly standard normal."""
    cy, cx = cells
    g = rng.standard_normal((cy + 1, cx + 1)).astype(np.float32)
    yy, xx = np.linspace(0, cy, h, dtype=np.float32), np.linspace(0, cx, w, dtype=np.float32)
    y0, x0 = np.minimum(yy.astype(int), cy - 1), np.minimum(xx.astype(int), cx - 1)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _texture(rng: np.random.Generator, h: int, w: int, base: int = 3) -> np.ndarray:
    """Three octaves of smooth noise: float32 (h, w), roughly in [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    for octave in range(3):
        k = base * 2**octave
        out += _smooth_noise(rng, h, w, (k, max(2, k * w // h))) / 2**octave
    return out / 1.75


def _room_layout(seed: int, room: int) -> tuple[float, list[tuple[float, float, float, float, int]]]:
    """Floor line and wall panels (y0, y1, x0, x1 as canvas fractions; a kind 0..2) of a room."""
    rng = _rng(seed, _S_ROOM, room)
    horizon = rng.uniform(0.55, 0.7)
    panels = []
    for _ in range(int(rng.integers(3, 6))):
        x0 = rng.uniform(0.0, 0.9)
        y0 = rng.uniform(0.05, horizon - 0.2)
        panels.append((y0, rng.uniform(y0 + 0.1, horizon), x0, x0 + rng.uniform(0.06, 0.25), int(rng.integers(3))))
    return horizon, panels


def _indoor_background(rng: np.random.Generator, layout: tuple, h: int, w: int, infrared: bool) -> np.ndarray:
    """A room: wall, floor, baseboard and panels (doors, posters, windows, radiators)."""
    horizon, panels = layout
    rows = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    cols = (np.arange(w, dtype=np.float32) / w)[None, :, None]
    tex = _texture(rng, h, w)[..., None]
    if infrared:
        wall, floor, base = rng.uniform(0.12, 0.22), rng.uniform(0.18, 0.28), rng.uniform(0.1, 0.3)
        panel_values = [rng.uniform(0.02, 0.1), rng.uniform(0.35, 0.55), rng.uniform(0.15, 0.3)]
        amp = 0.03
    else:
        wall = _PALETTE[rng.choice([1, 17, 14, 6, 2])] * rng.uniform(0.85, 1.0)
        floor = _PALETTE[rng.choice([2, 3, 15, 13, 14])] * rng.uniform(0.7, 0.95)
        base = _PALETTE[rng.choice([0, 3, 15])]
        panel_values = [_PALETTE[rng.integers(len(_PALETTE))] for _ in range(3)]
        amp = 0.05
    img = np.where(rows < horizon, wall, floor * (0.85 + 0.3 * (rows - horizon))) * (1 + amp * tex)
    for y0, y1, x0, x1, kind in panels:
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        img = np.where(inside, np.asarray(panel_values[kind]) * (1 + amp * tex), img)
    img = np.where(np.abs(rows - horizon) < 0.012, base, img)
    img = np.clip(img, 0, 1).astype(np.float32)
    return img[..., 0] if infrared else img


def _outdoor_background(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """An outdoor scene: ``kind`` "gate" or "garden" (visible, (h, w, 3)) or "ir" ((h, w) heat)."""
    rows = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    cols = (np.arange(w, dtype=np.float32) / w)[None, :, None]
    tex, fine = _texture(rng, h, w)[..., None], _texture(rng, h, w, base=8)[..., None]
    h1, h2 = rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.64)
    if kind == "ir":
        sky = rng.uniform(0.0, 0.06) + 0.05 * rows
        band = rng.uniform(0.15, 0.3) * (1 + 0.25 * fine)
        ground = rng.uniform(0.3, 0.45) * (1 + 0.12 * tex)
        img = np.where(rows < h1, sky, np.where(rows < h2, band, ground))
        for _ in range(int(rng.integers(1, 3))):  # warm objects (parked cars, lamps)
            x0, y0 = rng.uniform(0, 0.9), rng.uniform(h1, h2)
            inside = (cols >= x0) & (cols < x0 + rng.uniform(0.05, 0.15)) & (rows >= y0) & (rows < y0 + 0.12)
            img = np.where(inside, rng.uniform(0.45, 0.6), img)
        return np.clip(img[..., 0], 0, 1).astype(np.float32)
    sky = np.array([0.62, 0.75, 0.92], np.float32) * rng.uniform(0.9, 1.1) + 0.2 * rows
    if kind == "gate":
        wall = _PALETTE[rng.choice([2, 14, 17, 15])] * (1 + 0.1 * tex)
        ground = np.array([0.5, 0.5, 0.5], np.float32) * rng.uniform(0.8, 1.1) * (1 + 0.08 * fine)
        period, x0, x1 = rng.uniform(0.02, 0.04), rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
        bars = ((cols % period) < period * 0.3) & (cols >= x0) & (cols < x1) & (rows > h1 + 0.05)
        band = np.where(bars, _PALETTE[0], wall)
        for _ in range(2):
            px = rng.uniform(0, 0.95)
            band = np.where((cols >= px) & (cols < px + 0.05), _PALETTE[17] * 0.9, band)
        tiles = ((rows * h) % 9 < 1) & (rows > h2)
        ground = np.where(tiles, ground * 0.8, ground)
    else:  # garden
        leaves = _texture(rng, h, w, base=10)[..., None]
        band = np.where(leaves > 0, _PALETTE[12] * (1 + 0.2 * fine), _PALETTE[13] * 0.8)
        for _ in range(int(rng.integers(1, 4))):
            px = rng.uniform(0, 0.95)
            band = np.where((cols >= px) & (cols < px + 0.02) & (rows > (h1 + h2) / 2), _PALETTE[15], band)
        grass = np.array([0.35, 0.55, 0.25], np.float32) * (1 + 0.15 * fine)
        centre, spread = rng.uniform(0.3, 0.7), 0.1 + 0.4 * (rows - h2)
        ground = np.where(np.abs(cols - centre) < spread, _PALETTE[14] * (1 + 0.08 * fine), grass)
    img = np.where(rows < h1, sky, np.where(rows < h2, band, ground))
    return np.clip(img, 0, 1).astype(np.float32)


def camera_attributes(seed: int, cam: int, image_size: tuple[int, int]) -> Camera:
    """The fixed properties of camera ``cam`` (1..6) for ``seed`` and image size (H, W)."""
    h, w = image_size
    hc, wc = int(round(h * 1.3)), w * 3
    rng = _rng(seed, _S_CAMERA, cam)
    infrared, outdoor = cam in INFRARED_CAMS, cam in (4, 5, 6)
    if cam in (1, 2, 3):
        room = 1 if cam == 1 else 2  # cam3 watches cam2's room
        background = _indoor_background(rng, _room_layout(seed, room), hc, wc, infrared)
    else:
        background = _outdoor_background(rng, hc, wc, {4: "gate", 5: "garden", 6: "ir"}[cam])
    warm = np.array([1.06, 1.0, 0.88] if not outdoor else [0.97, 1.0, 1.05], np.float32)
    return Camera(
        cam=cam, infrared=infrared, outdoor=outdoor, background=background,
        gain=rng.uniform(0.6, 0.8) if infrared else rng.uniform(0.9, 1.2) if outdoor else rng.uniform(0.75, 1.0),
        cast=(warm * rng.uniform(0.94, 1.06, 3)).astype(np.float32),
        scale=rng.uniform(0.8, 0.88), foot=rng.uniform(0.94, 0.98),
        blur=rng.uniform(0.5, 0.9) if infrared else rng.uniform(0.3, 0.8),
        noise=rng.uniform(0.02, 0.035) if infrared else rng.uniform(0.008, 0.02),
        ir_offset=rng.uniform(0.04, 0.15), bloom=rng.uniform(0.2, 0.6),
    )


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Pose:
    """Per-image placement and walking pose (pixels for placement, body units otherwise)."""

    height_px: float
    cx: float
    foot_y: float
    lean: float
    flip: bool
    back: bool
    arm_swing: float
    feet: tuple[float, float]
    lift: tuple[float, float]
    light: float
    crop: tuple[int, int]


def _pose(rng: np.random.Generator, ident: Identity, camera: Camera, image_size: tuple[int, int]) -> Pose:
    """Draw one image's pose and placement."""
    h, w = image_size
    lift = rng.uniform(0.0, 0.03)
    lifted = int(rng.integers(2))
    hc, wc = camera.background.shape[:2]
    return Pose(
        height_px=h * camera.scale * ident.stature * rng.uniform(0.95, 1.05),
        cx=w / 2 + rng.uniform(-0.06, 0.06) * w,
        foot_y=h * (camera.foot + rng.uniform(-0.015, 0.015)),
        lean=rng.uniform(-0.03, 0.03),
        flip=bool(rng.random() < 0.5),
        back=bool(rng.random() < 0.15),
        arm_swing=rng.uniform(-1.0, 1.0),
        feet=(rng.uniform(-0.01, 0.04), rng.uniform(-0.01, 0.04)),
        lift=(lift, 0.0) if lifted == 0 else (0.0, lift),
        light=rng.uniform(0.85, 1.15),
        crop=(int(rng.integers(hc - h + 1)), int(rng.integers(wc - w + 1))),
    )


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: (ys, xs), float32 (h, w) each."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def _body_coords(pose: Pose, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Body-local coordinates of every pixel: (x, u), float32 (H, W), in units of height.

    ``u`` is 0 at the top of the head and 1 at the soles, ``x`` is 0 on the body axis and
    mirrored when the image is flipped; lean shears ``x`` with the height above the feet.
    """
    ys, xs = _grid(*image_size)
    p = pose.height_px
    u = (ys - (pose.foot_y - p)) / p
    x = (xs - pose.cx - pose.lean * (pose.foot_y - ys)) / p
    return (-x if pose.flip else x), u


def _ellipse(x: np.ndarray, u: np.ndarray, cx: float, cu: float, rx: float, ru: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((u - cu) / ru) ** 2 <= 1.0


def _box(x: np.ndarray, u: np.ndarray, x0: float, x1: float, u0: float, u1: float) -> np.ndarray:
    return (x >= x0) & (x < x1) & (u >= u0) & (u < u1)


def _capsule(
    x: np.ndarray, u: np.ndarray, a: tuple[float, float], b: tuple[float, float], r0: float, r1: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tapered limb from ``a`` (radius r0) to ``b`` (radius r1): (mask, t along the limb)."""
    dx, du = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * dx + (u - a[1]) * du) / (dx * dx + du * du), 0.0, 1.0)
    px, pu = x - (a[0] + t * dx), u - (a[1] + t * du)
    r = r0 + (r1 - r0) * t
    return px * px + pu * pu <= r * r, t


def _pattern(kind: str, x: np.ndarray, u: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """Where a garment shows its second material: bool (H, W)."""
    h = ((u * freq + phase) % 1.0) < 0.5
    v = ((x * freq + phase) % 1.0) < 0.5
    if kind == "solid":
        return np.zeros(x.shape, bool)
    return h if kind == "hstripes" else v if kind == "vstripes" else h ^ v


def label_map(ident: Identity, pose: Pose, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the person as materials: (labels uint8 (H, W) in 0..N_MATERIALS-1, x float32 (H, W)).

    Parts are painted back to front; the returned ``x`` (body-local, height units) drives the
    shading.
    """
    x, u = _body_coords(pose, image_size)
    lab = np.zeros(x.shape, np.uint8)
    ax = np.abs(x)
    rx, ry = ident.head_rx, ident.head_ry
    head_u, sh_u, hip_u = ry + 0.005, 2 * ry + 0.03, ident.hip_u
    sw, hw = ident.shoulder_w, ident.hip_w
    side = {"bag_left": -1.0, "bag_right": 1.0}.get(ident.accessory, 0.0)
    backpack = _box(x, u, -sw * ident.backpack_w, sw * ident.backpack_w, sh_u - 0.015, sh_u + ident.backpack_h)

    if ident.hair == "long" and not pose.back:  # hair behind the shoulders
        lab[(ax < rx * 1.2) & (u > head_u) & (u < sh_u + 0.09)] = HAIR
    if ident.accessory == "backpack" and not pose.back:
        lab[backpack] = BAG

    # Legs, shoes, then the bottom garment.
    bottom_end = {"trousers": 0.94, "shorts": 0.38, "skirt": 0.0}[ident.bottom]
    for s, spread, lift in ((-1.0, pose.feet[0], pose.lift[0]), (1.0, pose.feet[1], pose.lift[1])):
        foot = (s * (hw * 0.5 + spread), 0.975 - lift)
        leg, t = _capsule(x, u, (s * hw * 0.5, hip_u), foot, ident.leg_r, 0.028)
        lab[leg] = SKIN
        lab[leg & (t < bottom_end)] = BOT_A
        lab[_ellipse(x, u, foot[0] + s * 0.008, foot[1] + 0.005, 0.04, 0.02)] = SHOES
    if ident.bottom == "skirt":
        lab[(u >= hip_u - 0.01) & (u < hip_u + ident.skirt_len) & (ax < hw + 0.02 + 0.3 * (u - hip_u))] = BOT_A
    else:
        lab[_box(ax, u, 0.0, hw, hip_u - 0.01, hip_u + 0.06)] = BOT_A

    # Torso with rounded shoulders, neck.
    width = sw + (hw - sw) * (u - sh_u) / (hip_u - sh_u)
    rc = 0.035
    corner = (u < sh_u + rc) & (ax > sw - rc) & ((ax - (sw - rc)) ** 2 + (u - (sh_u + rc)) ** 2 > rc * rc)
    lab[(u >= sh_u) & (u < hip_u + 0.02) & (ax < width) & ~corner] = TOP_A
    lab[(ax < 0.022) & (u >= head_u) & (u < sh_u + 0.01)] = SKIN
    if ident.accessory == "backpack":
        if pose.back:
            lab[backpack] = BAG
        else:  # straps
            lab[(np.abs(ax - sw * 0.55) < 0.014) & (u >= sh_u) & (u < sh_u + 0.17)] = BAG
    if side:
        strap, _ = _capsule(x, u, (-side * (sw - 0.04), sh_u + 0.005), (side * (hw + 0.02), hip_u - 0.06), 0.011, 0.011)
        lab[strap] = BAG

    # Arms (sleeve, then skin) and hands.
    sleeve_end = 0.88 if ident.sleeve == "long" else 0.35
    length = 0.36 * (1.0 - 0.1 * abs(pose.arm_swing))
    for s, swing in ((-1.0, pose.arm_swing), (1.0, -pose.arm_swing)):
        angle = ident.arm_abduction + 0.07 * swing
        a = (s * (sw - 0.025), sh_u + 0.03)
        b = (a[0] + s * length * np.sin(angle), a[1] + length * np.cos(angle))
        arm, t = _capsule(x, u, a, b, ident.arm_r, ident.arm_r * 0.8)
        lab[arm] = SKIN
        lab[arm & (t < sleeve_end)] = TOP_A
        lab[_ellipse(x, u, b[0], b[1], 0.026, 0.03)] = SKIN
    if side:
        lab[_box(x, u, side * (hw + 0.035) - 0.045, side * (hw + 0.035) + 0.045, hip_u - 0.09, hip_u + 0.05)] = BAG

    # Head, hair or hat.
    head = _ellipse(x, u, 0.0, head_u, rx, ry)
    lab[head] = HAIR if pose.back and ident.hair != "hat" else SKIN
    if ident.hair == "hat":
        lab[_ellipse(x, u, 0.0, head_u, rx * 1.1, ry * 1.1) & (u < head_u - 0.15 * ry)] = HAT
        lab[(ax < rx * 1.4) & (np.abs(u - (head_u - 0.15 * ry)) < 0.012)] = HAT
        if pose.back:
            lab[head & (u >= head_u - 0.15 * ry) & (u < head_u + 0.6 * ry)] = HAIR
    else:
        lab[_ellipse(x, u, 0.0, head_u, rx * 1.08, ry * 1.08) & (u < head_u - 0.25 * ry)] = HAIR
        if ident.hair == "long" and pose.back:
            lab[(ax < rx * 1.2) & (u > head_u) & (u < sh_u + 0.12)] = HAIR

    # Garment patterns swap in the second material.
    lab[(lab == TOP_A) & _pattern(ident.top_pattern, x, u, ident.top_freq, ident.top_phase)] = TOP_B
    lab[(lab == BOT_A) & _pattern(ident.bottom_pattern, x, u, ident.bottom_freq, ident.bottom_phase)] = BOT_B
    return lab, x


def _crop(background: np.ndarray, pose: Pose, image_size: tuple[int, int]) -> np.ndarray:
    oy, ox = pose.crop
    return background[oy : oy + image_size[0], ox : ox + image_size[1]]


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float, blur: float) -> Image.Image:
    """Add sensor noise, quantise, blur: float [0, 1] (H, W) or (H, W, 3) -> PIL image."""
    img = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
    out = Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(blur))


def render_visible(ident: Identity, camera: Camera, rng: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """One visible image of ``ident`` seen by ``camera``: uint8 (H, W, 3) RGB.

    Colour = material reflectance x cylindrical shading x camera gain and colour cast x
    per-image lighting, over the camera's background; then noise and blur.
    """
    pose = _pose(rng, ident, camera, image_size)
    lab, x = label_map(ident, pose, image_size)
    shade = (1.0 - 0.4 * np.minimum((x / 0.17) ** 2, 1.0))[..., None]
    person = ident.colours[lab] * shade
    img = np.where((lab == BG)[..., None], _crop(camera.background, pose, image_size), person)
    rows = np.linspace(1.08, 0.92, image_size[0], dtype=np.float32)[:, None, None]
    light = camera.gain * pose.light * camera.cast * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    img = img * light * (rows if not camera.outdoor else 1.0)
    return np.asarray(_finish(img, rng, camera.noise, camera.blur))


def render_infrared(ident: Identity, camera: Camera, rng: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """One infrared image of ``ident`` seen by ``camera``: uint8 (H, W), grey levels.

    Intensity = offset + gain x heat (material heat, slightly cooler towards the body's
    silhouette) over the camera's heat background, plus bloom around hot regions, automatic
    gain jitter, strong noise and blur. The visible colours play no part.
    """
    pose = _pose(rng, ident, camera, image_size)
    lab, x = label_map(ident, pose, image_size)
    person = ident.heat[lab] * (1.0 - 0.15 * np.minimum((x / 0.17) ** 2, 1.0))
    heat = np.where(lab == BG, _crop(camera.background, pose, image_size), person)
    img = camera.ir_offset + rng.uniform(-0.03, 0.03) + camera.gain * rng.uniform(0.9, 1.1) * heat
    hot = Image.fromarray((np.clip(img - 0.55, 0.0, 1.0) * 255.0).astype(np.uint8))
    glow = np.asarray(hot.filter(ImageFilter.GaussianBlur(3.0)), dtype=np.float32) / 255.0
    img = img + camera.bloom * glow
    return np.asarray(_finish(img, rng, camera.noise, camera.blur))


# --------------------------------------------------------------------------- writing


def _split_ids(seed: int, n_train: int, n_val: int, n_test: int) -> tuple[list[int], list[int], list[int]]:
    """Distinct ids from 1..533 for the three splits, each sorted.

    The ids are a prefix of one seeded permutation, so a larger dataset contains the ids of a
    smaller one made with the same seed.
    """
    ids = _rng(seed, _S_IDS).permutation(np.arange(1, MAX_PID + 1))[: n_train + n_val + n_test]
    parts = np.split(ids, [n_train, n_train + n_val])
    return tuple(sorted(int(i) for i in p) for p in parts)  # type: ignore[return-value]


def _params(n_train: int, n_val: int, n_test: int, image_size: tuple[int, int]) -> dict[str, object]:
    return {"n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": [int(image_size[0]), int(image_size[1])]}


def _validate(seed: int, n_train: int, n_val: int, n_test: int, image_size: tuple[int, int]) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if min(n_train, n_val, n_test) < 1:  # SYSU-MM01 readers reject an empty id list
        raise ValueError(f"need at least one id per split, got {n_train}, {n_val}, {n_test}")
    if n_train + n_val + n_test > MAX_PID:
        raise ValueError(f"at most {MAX_PID} identities in all, got {n_train + n_val + n_test}")
    if len(image_size) != 2 or image_size[0] < 32 or image_size[1] < 16:
        raise ValueError(f"image_size is (H, W) with H >= 32 and W >= 16, got {image_size!r}")


def is_complete_demo(out: Path, seed: int, **params: object) -> bool:
    """Whether ``out`` holds a finished demo made by this generator version with these arguments.

    Args:
        out: the dataset folder.
        seed: the seed it should have been made with.
        **params: any of ``n_train``, ``n_val``, ``n_test``, ``image_size`` (defaults as in
            :func:`make_demo`).

    Returns:
        True when ``out/demo_info.json`` (written last) and the three split files exist and
        the recorded version, seed and parameters match; False otherwise (never raises for a
        missing or unreadable folder).

    Raises:
        TypeError: for an unknown parameter name.
    """
    unknown = set(params) - set(_PARAM_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown demo parameter(s): {sorted(unknown)}")
    merged = {**_PARAM_DEFAULTS, **params}
    expected = {"generator_version": GENERATOR_VERSION, "seed": int(seed), **_params(**merged)}  # type: ignore[arg-type]
    out = Path(out)
    try:
        info = json.loads((out / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or any(info.get(k) != v for k, v in expected.items()):
        return False
    return all((out / "exp" / f"{s}_id.txt").is_file() for s in ("train", "val", "test"))


def _describe(out: Path) -> str:
    """Why ``out`` cannot be reused, for the one-line error."""
    try:
        info = json.loads((out / INFO_FILE).read_text())
        recorded = ", ".join(f"{k}={info[k]}" for k in ("generator_version", "seed", "n_train", "n_val", "n_test", "image_size"))
        return f"holds a demo made with different arguments ({recorded})"
    except (OSError, ValueError, KeyError, TypeError):
        return "exists and is not a complete demo dataset" if out.is_dir() else "exists and is not a folder"


def _render_into(
    root: Path,
    seed: int,
    plan: list[tuple[int, int, int]],
    image_size: tuple[int, int],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render every (pid, cam, count) of ``plan`` as ``root/camC/PPPP/NNNN.jpg``."""
    total, done = sum(n for _, _, n in plan), 0
    cameras = {c: camera_attributes(seed, c, image_size) for c in VISIBLE_CAMS + INFRARED_CAMS}
    idents: dict[int, Identity] = {}
    for pid, cam, count in plan:
        if pid not in idents:
            idents[pid] = identity_attributes(seed, pid)
        ident = idents[pid]
        camera = cameras[cam]
        folder = root / f"cam{cam}" / f"{pid:04d}"
        folder.mkdir(parents=True)
        for n in range(1, count + 1):
            rng = _rng(seed, _S_IMAGE, pid, cam, n)
            if camera.infrared:
                grey = render_infrared(ident, camera, rng, image_size)
                img = Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
            else:
                img = Image.fromarray(render_visible(ident, camera, rng, image_size))
            img.save(folder / f"{n:04d}.jpg", "JPEG", quality=JPEG_QUALITY)
            done += 1
            if progress is not None:
                progress(done, total)


def make_demo(
    out: Path,
    seed: int = 0,
    *,
    n_train: int = 32,
    n_val: int = 8,
    n_test: int = 32,
    image_size: tuple[int, int] = (128, 64),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate the demo dataset in SYSU-MM01's layout (see the module docstring) at ``out``.

    The folder is rendered into ``out.parent/.<name>.tmp-<pid>`` and renamed to ``out`` once
    complete (``demo_info.json`` is written last). If ``out`` already holds a complete demo
    made with the same arguments, nothing is done. An existing empty folder is replaced.

    Args:
        out: the dataset folder to create.
        seed: non-negative int; the same arguments give byte-identical files.
        n_train, n_val, n_test: identities per split (each >= 1, at most 533 in all), drawn
            without replacement from 1..533. With the defaults: 72 identities, about 2,400
            images.
        image_size: (H, W) of every image in pixels (H >= 32, W >= 16); images are 8-bit RGB
            JPEGs (quality 90); infrared ones have three equal channels.
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        ``out``.

    Raises:
        UserError: ``out`` exists and is not a matching complete demo (another seed, other
            arguments, another generator version, or some other folder or file). Nothing of
            the user's is deleted.
        ValueError: invalid arguments.
    """
    _validate(seed, n_train, n_val, n_test, image_size)
    out = Path(out)
    params = dict(n_train=n_train, n_val=n_val, n_test=n_test, image_size=tuple(image_size))
    if is_complete_demo(out, seed, **params):
        return out
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UserError(f"{out} {_describe(out)}; choose another --out or delete it")

    splits = _split_ids(seed, n_train, n_val, n_test)
    plan = [(pid, cam, n) for pid in sorted(sum(splits, [])) for cam, n in _camera_presence(seed, pid).items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():  # a leftover of an interrupted run of ours with the same process id
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _render_into(tmp, seed, plan, tuple(image_size), progress)
        (tmp / "exp").mkdir()
        for name, ids in zip(("train", "val", "test"), splits):
            (tmp / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids))
        info = {"generator_version": GENERATOR_VERSION, "seed": int(seed), **_params(n_train, n_val, n_test, image_size),
                "images": sum(n for _, _, n in plan), "name": "demo", "layout": "SYSU-MM01"}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, out)  # atomic; replaces only an empty folder
        except OSError:
            if is_complete_demo(out, seed, **params):  # another process finished first
                shutil.rmtree(tmp)
                return out
            raise UserError(f"{out} appeared while the demo was being generated; choose another --out or delete it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
