"""A small procedural visible-infrared re-ID dataset in SYSU-MM01's on-disk layout.

The demo dataset lets the whole toolkit run (and be tested) without downloading SYSU-MM01
(Wu et al., ICCV 2017, "RGB-Infrared Cross-Modality Person Re-Identification"). It is
written *exactly* in SYSU-MM01's layout, so the SYSU-MM01 reader reads it unchanged::

    OUT/cam1/0001/0001.jpg ... OUT/cam6/<pid %04d>/<n %04d>.jpg   n = 0001, 0002, ... per (cam, pid)
    OUT/exp/train_id.txt    one line of comma-separated ids, e.g. "3,7,12"
    OUT/exp/val_id.txt      same
    OUT/exp/test_id.txt     same
    OUT/aligned_nir/cam<k>/<pid>/<n>.jpg   ground truth for stage 1 (see below)
    OUT/demo_info.json      generator version, arguments and image count; written last

Cameras 1, 2, 4 and 5 are visible (RGB), 3 and 6 infrared, as in SYSU-MM01: cam1 and cam2 are
indoor rooms, cam3 is an infrared camera in cam2's room, cam4 ("gate") and cam5 ("garden") are
outdoor visible cameras and cam6 ("street") is an outdoor infrared camera. Infrared images are
stored as 3-channel JPEGs whose channels are equal, like SYSU-MM01's.

Near-infrared physics (``physics="nir"``, the default)
------------------------------------------------------
SYSU-MM01's cameras 3 and 6 and LLCM's infrared cameras are near-infrared cameras with an
active illuminator (about 850 nm): a pixel's brightness is the *reflectance* of the surface
in that band under the camera's own lamp, not its heat. The demo renders exactly that:

* **Dyes.** Every garment, hat, shoe and bag material is one of the 20 dyes of the palette,
  and each dye has one fixed near-infrared reflectance (``DYE_NIR``), shared by every
  identity that wears it. Most dyes are bright (0.62-0.84): many organic textile dyes are
  nearly transparent above about 750 nm, so the fabric shows its fibre's own high
  reflectance whatever its visible colour. A few are dark (0.06-0.30): carbon-black
  pigments absorb across the near infrared (black, the carbon-tinted grey, olive and slate
  prints; Mallakpour group, IUT, "Effect of carbon black nanoparticles on reflective
  behavior of printed cotton/nylon fabrics in visible/near infrared regions"; US patent
  11,656,388: black fabrics "absorb ... near-IR electromagnetic radiation with a wavelength
  of greater than about 750 nanometers"). The table is therefore *not* a function of
  luminance: navy, burgundy and purple are dark in visible light and bright here, grey is
  mid-grey in visible light and dark here (``test_demo.py`` checks that no affine function
  of luminance explains it). Visible colour matches that split in the near infrared are
  the subject of Prosser & Arruda, "Color matching spanning the visible and
  near-infrared", US Army Natick TR-90/006 (1989).
* **Fibres.** Each garment material is one of four fibres (cotton, polyester, wool, nylon)
  whose factor (``FIBRE_NIR``, 0.8-1.0) multiplies the dye's reflectance: per-fibre
  variation around the dye, the same for everyone with that dye and fibre.
* **Skin and hair.** Skin reflects strongly at 850 nm, where melanin absorbs far less than
  in visible light, so skin tones that differ a lot in visible light differ little here
  (0.44-0.60; Jacquez et al., "Spectral reflectance of human skin in the region 0.7-2.6 µ",
  J. Appl. Physiol. 1955: pigmentation differences appear only below 1 µm; Cooksey &
  Allen, Proc. SPIE 8734, 2013). Dark hair is brighter than in visible light (0.14-0.50).
* **Scenes.** Walls, floors and panels use the dye table as paints; foliage and grass are
  bright (0.45-0.55, the near-infrared plateau of leaves), asphalt and glass dark, the
  night sky black (the lamp does not reach it); reflectance factors of natural objects in
  700-1200 nm lie within 10-80 % (Khajeh Mehrizi et al., ICCC 2013), and all ours do.
* **Camera.** The lamp sits by the lens: brightness falls off from the lit centre
  (``1 - k r^2``, k 0.25-0.5 per camera), the background is further from the lamp than the
  person (x 0.45-0.85), shading follows the surface normal, the exposure varies per image
  (x 0.85-1.15, automatic gain), and the sensor adds shot noise (variance proportional to
  the signal) and read noise, then the optics blur.

A garment's near-infrared brightness is thus a property of its dye and fibre that a
visible-to-infrared translation can learn from the visible colour and a grayscale copy
cannot. What carries across modalities as well is geometry: body shape, skirt versus
trousers, sleeve length, pattern orientation and frequency, hair and accessory shape.

``physics="thermal"`` keeps the version-2 rendering (far-infrared heat per material,
independent of its colour, over heat scenes, with bloom: RegDB-like).

Ground truth for stage 1
------------------------
For every visible image ``cam<k>/<pid>/<n>.jpg`` the demo also writes the same scene
(person, pose, camera geometry, background) rendered as the infrared physics would see it,
under the camera's near-infrared twin (its own lamp, exposure and noise):
``aligned_nir/cam<k>/<pid>/<n>.jpg`` (``aligned_thermal/`` for thermal physics).
``pipeline eval-gan --dataset demo`` scores the DSGAN's translation against it.

What is drawn
-------------
Every image is a pedestrian drawn from body-local coordinates (``u`` down the body from the
top of the head, ``x`` across it, both in units of the person's height) into a *material
label map*: background, skin, hair, hat, two top-garment materials, two bottom-garment
materials, shoes and bag. Garment patterns (solid, horizontal or vertical stripes, checks)
decide which of a garment's two materials covers a pixel.

* Per identity (fixed across cameras): stature, head size, shoulder and hip width, leg
  length, sleeve length, trousers / shorts / skirt, garment patterns with their stripe
  frequency and phase, a dye and a fibre per material (hence its visible colour and its
  near-infrared reflectance), skin tone, hair (short, long, or a hat) and its colour,
  accessory (none, backpack, shoulder bag on the left or right), and a heat per material
  for thermal physics.
* Per camera (fixed for a seed): a background scene, lighting gain and colour cast, the
  person's typical scale and foot line, blur and noise, and the near-infrared lamp.
* Per image: scale (+-10 %) and position jitter, lean, walking pose (arm swing, leg spread,
  a lifted foot), front or back view, a horizontal flip with p = 0.5 (which mirrors the bag
  side), lighting or exposure jitter and the noise realisation.

Determinism: every random draw comes from ``np.random.SeedSequence(seed, spawn_key=...)``
keyed by what it describes (the identity number, the camera, the image), so the same
arguments give byte-identical files, and an identity looks the same whatever the split
sizes. The discrete attributes of all 533 possible identities are distinct by construction
(each identity gets its own cell of the attribute grid), and the identities that
:func:`pretrain_identity` draws for the ImageNet stand-in (``common.standin``) take other
cells, so no stand-in identity is a demo identity.
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

GENERATOR_VERSION: int = 3
"""Bump when the rendering changes: a folder made by another version is not reused."""

VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
INFRARED_CAMS: tuple[int, ...] = (3, 6)
MAX_PID = 533  # SYSU-MM01's identity numbers run from 1 to 533
MAX_PRETRAIN_IDS = 4000  # identities the ImageNet stand-in may draw (other attribute cells)
PHYSICS: tuple[str, ...] = ("nir", "thermal")
ALIGNED_DIRS: dict[str, str] = {"nir": "aligned_nir", "thermal": "aligned_thermal"}
JPEG_QUALITY = 90
INFO_FILE = "demo_info.json"
_PARAM_DEFAULTS: dict[str, object] = {"n_train": 32, "n_val": 8, "n_test": 32, "image_size": (128, 64), "physics": "nir"}

# Keys of the independent random streams (first element of each SeedSequence spawn_key).
_S_IDS, _S_SIGNATURE, _S_IDENTITY, _S_PRESENCE, _S_CAMERA, _S_ROOM, _S_IMAGE, _S_ALIGNED, _S_PRETRAIN = range(9)

# Materials of the label map.
BG, SKIN, HAIR, HAT, TOP_A, TOP_B, BOT_A, BOT_B, SHOES, BAG = range(10)
N_MATERIALS = 10
GARMENTS = (HAT, TOP_A, TOP_B, BOT_A, BOT_B, SHOES, BAG)  # the dyed materials

PATTERNS = ("solid", "hstripes", "vstripes", "checks")
SLEEVES = ("short", "long")
BOTTOMS = ("trousers", "shorts", "skirt")
HAIRS = ("short", "long", "hat")
ACCESSORIES = ("none", "backpack", "bag_left", "bag_right")

# The 20 dyes: visible colour (sRGB / 255) and near-infrared reflectance at ~850 nm.
_PALETTE = np.array(
    [
        (25, 25, 28), (235, 235, 230), (128, 128, 128), (62, 62, 68), (30, 40, 90),
        (40, 90, 190), (140, 180, 220), (180, 30, 35), (110, 25, 40), (230, 150, 170),
        (230, 120, 40), (230, 200, 60), (40, 130, 60), (110, 110, 50), (190, 170, 120),
        (110, 70, 40), (110, 60, 140), (220, 200, 170), (70, 95, 140), (30, 120, 120),
    ],
    dtype=np.float32,
) / 255.0
DYE_NIR = np.array(
    [
        0.06,  # black: carbon black absorbs
        0.84,  # white
        0.26,  # mid grey: carbon-tinted
        0.66,  # charcoal: organic black dye, transparent at 850 nm
        0.70,  # navy
        0.74,  # blue
        0.78,  # light blue
        0.80,  # red
        0.72,  # burgundy
        0.81,  # pink
        0.79,  # orange
        0.82,  # yellow
        0.68,  # green
        0.22,  # olive: pigment print with carbon black
        0.55,  # khaki
        0.45,  # brown (leather, wood stain)
        0.75,  # purple
        0.80,  # cream
        0.30,  # slate: carbon-tinted
        0.62,  # teal
    ],
    dtype=np.float32,
)
FIBRES = ("cotton", "polyester", "wool", "nylon")
FIBRE_NIR = np.array([1.0, 0.9, 0.8, 0.95], np.float32)  # multiplies the dye's reflectance
_SKIN_TONES = np.array(
    [(255, 219, 172), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36)], np.float32
) / 255.0
SKIN_NIR = np.array([0.60, 0.58, 0.55, 0.50, 0.44], np.float32)
_HAIR_COLOURS = np.array(
    [(20, 18, 18), (45, 30, 22), (90, 60, 35), (190, 160, 100), (150, 150, 150)], np.float32
) / 255.0
HAIR_NIR = np.array([0.14, 0.22, 0.32, 0.50, 0.48], np.float32)
_LUMA = _PALETTE @ np.array([0.299, 0.587, 0.114], np.float32)
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
    palette (dye) indices of the garments' first materials. Per material (N_MATERIALS,):
    ``dyes`` int64 palette index (-1 for background, skin, hair), ``fibres`` int64 index into
    :data:`FIBRES` (-1 where none), ``colours`` float32 (N_MATERIALS, 3) visible reflectance in
    [0, 1], ``nir`` float32 near-infrared reflectance in [0, 1], ``heat`` float32 in [0, 1]
    (thermal physics).
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
    dyes: np.ndarray
    fibres: np.ndarray
    colours: np.ndarray
    nir: np.ndarray
    heat: np.ndarray


@lru_cache(maxsize=8)
def _signature_cells(seed: int) -> np.ndarray:
    """Distinct cells of the attribute grid: the first 533 for demo pids 1..533, the next
    :data:`MAX_PRETRAIN_IDS` for the stand-in's identities. int64 (533 + MAX_PRETRAIN_IDS,)."""
    return _rng(seed, _S_SIGNATURE).permutation(int(np.prod(_RADICES)))[: MAX_PID + MAX_PRETRAIN_IDS]


def _digits(cell: int) -> list[int]:
    out = []
    for radix in _RADICES:
        out.append(int(cell % radix))
        cell //= radix
    return out


def _other_colour(rng: np.random.Generator, avoid: int) -> int:
    """A palette index whose luminance differs from ``avoid``'s by >= 0.2 (a pattern's two
    colours stay distinguishable in grayscale)."""
    choices = np.flatnonzero(np.abs(_LUMA - _LUMA[avoid]) >= 0.2)
    return int(rng.choice(choices))


_FABRIC_HEAT = np.array([0.22, 0.45, 0.68, 0.9], np.float32)  # thermal physics: e.g. wool, denim, cotton, synthetic


def _make_identity(pid: int, digits: list[int], rng: np.random.Generator) -> Identity:
    """An identity from its attribute-grid digits and its own random stream."""
    top_pat, top_c, sleeve, bottom, bot_c, hair, acc = digits
    u = rng.uniform
    bottom_pat = int(rng.choice(len(PATTERNS), p=(0.55, 0.15, 0.15, 0.15)))

    dyes = np.full(N_MATERIALS, -1, np.int64)
    dyes[HAT] = rng.integers(len(_PALETTE))
    dyes[TOP_A], dyes[TOP_B] = top_c, _other_colour(rng, top_c)
    dyes[BOT_A], dyes[BOT_B] = bot_c, _other_colour(rng, bot_c)
    dyes[SHOES] = rng.choice([0, 1, 2, 3, 15])
    dyes[BAG] = rng.choice([0, 3, 4, 7, 15, 12, 16])
    skin, hair_colour = int(rng.integers(len(_SKIN_TONES))), int(rng.integers(len(_HAIR_COLOURS)))
    fibres = np.full(N_MATERIALS, -1, np.int64)
    fibres[list(GARMENTS)] = rng.integers(len(FIBRES), size=len(GARMENTS))
    fibres[SHOES] = 0  # leather: the dye's value as it is (factor 1)

    colours = np.zeros((N_MATERIALS, 3), np.float32)
    colours[SKIN], colours[HAIR] = _SKIN_TONES[skin], _HAIR_COLOURS[hair_colour]
    colours[list(GARMENTS)] = _PALETTE[dyes[list(GARMENTS)]]
    colours = np.clip(colours * u(0.92, 1.08, (N_MATERIALS, 3)), 0.0, 1.0).astype(np.float32)

    nir = np.zeros(N_MATERIALS, np.float32)  # fixed per dye and fibre: no per-identity jitter
    nir[SKIN], nir[HAIR] = SKIN_NIR[skin], HAIR_NIR[hair_colour]
    nir[list(GARMENTS)] = DYE_NIR[dyes[list(GARMENTS)]] * FIBRE_NIR[fibres[list(GARMENTS)]]

    heat = np.zeros(N_MATERIALS, np.float32)  # thermal physics: independent of the colours above
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
        backpack_h=u(0.2, 0.3), dyes=dyes, fibres=fibres, colours=colours, nir=nir, heat=heat,
    )


def identity_attributes(seed: int, pid: int) -> Identity:
    """The appearance of demo identity ``pid`` (1..533); depends only on ``(seed, pid)``.

    Raises:
        ValueError: ``pid`` outside 1..533.
    """
    if not 1 <= pid <= MAX_PID:
        raise ValueError(f"demo identities are numbered 1..{MAX_PID}, got {pid}")
    return _make_identity(pid, _digits(int(_signature_cells(seed)[pid - 1])), _rng(seed, _S_IDENTITY, pid))


def pretrain_identity(seed: int, k: int) -> Identity:
    """Stand-in identity ``k`` (0..MAX_PRETRAIN_IDS-1), disjoint from every demo identity.

    It takes attribute-grid cell ``533 + k`` of the seed's permutation, which no demo pid
    uses, and its own random stream; its ``pid`` is ``534 + k`` (outside SYSU-MM01's range).

    Raises:
        ValueError: ``k`` out of range.
    """
    if not 0 <= k < MAX_PRETRAIN_IDS:
        raise ValueError(f"stand-in identities are numbered 0..{MAX_PRETRAIN_IDS - 1}, got {k}")
    return _make_identity(MAX_PID + 1 + k, _digits(int(_signature_cells(seed)[MAX_PID + k])), _rng(seed, _S_PRETRAIN, k))


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


# --------------------------------------------------------------------------- scenes


class _Scene:
    """A background painted in three layers at once: visible colour float32 (h, w, 3),
    near-infrared reflectance float32 (h, w) and heat float32 (h, w), all in [0, 1]."""

    def __init__(self, h: int, w: int) -> None:
        self.rows = (np.arange(h, dtype=np.float32) / h)[:, None]  # (h, 1) canvas fractions
        self.cols = (np.arange(w, dtype=np.float32) / w)[None, :]  # (1, w)
        self.vis = np.zeros((h, w, 3), np.float32)
        self.nir = np.zeros((h, w), np.float32)
        self.heat = np.zeros((h, w), np.float32)

    def paint(self, mask: np.ndarray, vis, nir, heat) -> None:
        """Where ``mask`` (broadcastable to (h, w)) holds, set the three layers; each value
        is a constant or an array broadcastable to its layer."""
        mask = np.broadcast_to(mask, self.nir.shape)
        self.vis = np.where(mask[..., None], vis, self.vis).astype(np.float32)
        self.nir = np.where(mask, nir, self.nir).astype(np.float32)
        self.heat = np.where(mask, heat, self.heat).astype(np.float32)

    def layers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.clip(a, 0.0, 1.0).astype(np.float32) for a in (self.vis, self.nir, self.heat))  # type: ignore[return-value]


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


def _room_layout(seed: int, world: int, room: int) -> tuple[float, list[tuple[float, float, float, float, int]]]:
    """Floor line and wall panels (y0, y1, x0, x1 as canvas fractions; a kind 0..2) of a room."""
    rng = _rng(seed, _S_ROOM, world, room)
    horizon = rng.uniform(0.55, 0.7)
    panels = []
    for _ in range(int(rng.integers(3, 6))):
        x0 = rng.uniform(0.0, 0.9)
        y0 = rng.uniform(0.05, horizon - 0.2)
        panels.append((y0, rng.uniform(y0 + 0.1, horizon), x0, x0 + rng.uniform(0.06, 0.25), int(rng.integers(3))))
    return horizon, panels


def _paint(rng: np.random.Generator, choices: list[int]) -> tuple[np.ndarray, float]:
    """A paint from the dye table: (visible colour (3,), near-infrared reflectance)."""
    i = int(rng.choice(choices))
    return _PALETTE[i], float(DYE_NIR[i])


def _indoor_scene(rng: np.random.Generator, layout: tuple, h: int, w: int) -> _Scene:
    """A room: painted wall, floor, baseboard and panels (doors, posters, windows, radiators)."""
    horizon, panels = layout
    s = _Scene(h, w)
    tex = _texture(rng, h, w)
    vis_tex, ir_tex = (1 + 0.05 * tex)[..., None], 1 + 0.03 * tex
    wall, wall_nir = _paint(rng, [1, 17, 14, 6, 2])
    floor, floor_nir = _paint(rng, [2, 3, 15, 13, 14])
    base, base_nir = _paint(rng, [0, 3, 15])
    wall_gain, floor_gain = rng.uniform(0.85, 1.0), rng.uniform(0.7, 0.95)
    heat = {"wall": rng.uniform(0.12, 0.22), "floor": rng.uniform(0.18, 0.28), "base": rng.uniform(0.1, 0.3)}
    floor_shade = 0.85 + 0.3 * (s.rows - horizon)
    s.paint(s.rows < horizon, wall * wall_gain * vis_tex, wall_nir * (1 + 0.05 * tex), heat["wall"] * ir_tex)
    s.paint(s.rows >= horizon, (floor * floor_gain * floor_shade[..., None]) * vis_tex, floor_nir * 0.9 * floor_shade * (1 + 0.05 * tex),
            heat["floor"] * floor_shade * ir_tex)
    kinds = [_paint(rng, list(range(len(_PALETTE)))) for _ in range(3)]
    kind_heat = [rng.uniform(0.02, 0.1), rng.uniform(0.35, 0.55), rng.uniform(0.15, 0.3)]
    for y0, y1, x0, x1, kind in panels:
        inside = (s.rows >= y0) & (s.rows < y1) & (s.cols >= x0) & (s.cols < x1)
        s.paint(inside, kinds[kind][0] * vis_tex, kinds[kind][1] * (1 + 0.05 * tex), kind_heat[kind] * ir_tex)
    s.paint(np.abs(s.rows - horizon) < 0.012, base, base_nir, heat["base"])
    return s


def _outdoor_scene(rng: np.random.Generator, h: int, w: int, kind: str) -> _Scene:
    """An outdoor scene, ``kind`` "gate", "garden" or "street": sky, a middle band, ground.

    Near infrared under the camera's lamp: the sky is black, leaves and grass bright (their
    near-infrared plateau), asphalt and glass dark, paints as the dye table.
    """
    s = _Scene(h, w)
    rows, cols = s.rows, s.cols
    tex, fine = _texture(rng, h, w), _texture(rng, h, w, base=8)
    h1, h2 = rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.64)
    sky = np.array([0.62, 0.75, 0.92], np.float32) * rng.uniform(0.9, 1.1) + 0.2 * rows[..., None]
    s.paint(rows < h1, sky, 0.02, rng.uniform(0.0, 0.06) + 0.05 * rows)
    band, ground = (rows >= h1) & (rows < h2), rows >= h2
    if kind == "gate":
        wall, wall_nir = _paint(rng, [2, 14, 17, 15])
        s.paint(band, wall * (1 + 0.1 * tex)[..., None], wall_nir * (1 + 0.1 * tex), rng.uniform(0.15, 0.3) * (1 + 0.25 * fine))
        period, x0, x1 = rng.uniform(0.02, 0.04), rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
        s.paint(((cols % period) < period * 0.3) & (cols >= x0) & (cols < x1) & (rows > h1 + 0.05) & band, _PALETTE[0], DYE_NIR[0], 0.2)
        for _ in range(2):
            px = rng.uniform(0, 0.95)
            s.paint(band & (cols >= px) & (cols < px + 0.05), _PALETTE[17] * 0.9, DYE_NIR[17] * 0.9, 0.25)
        pave = rng.uniform(0.8, 1.1) * (1 + 0.08 * fine) * np.where((rows * h) % 9 < 1, 0.8, 1.0)
        s.paint(ground, 0.5 * pave[..., None], 0.32 * pave, rng.uniform(0.3, 0.45) * (1 + 0.12 * tex))
    elif kind == "garden":
        leaves = _texture(rng, h, w, base=10)
        s.paint(band, np.where((leaves > 0)[..., None], _PALETTE[12] * (1 + 0.2 * fine)[..., None], _PALETTE[13] * 0.8),
                np.where(leaves > 0, 0.55, 0.45) * (1 + 0.1 * fine), rng.uniform(0.15, 0.3) * (1 + 0.25 * fine))
        for _ in range(int(rng.integers(1, 4))):
            px = rng.uniform(0, 0.95)
            s.paint((cols >= px) & (cols < px + 0.02) & (rows > (h1 + h2) / 2) & band, _PALETTE[15], DYE_NIR[15], 0.3)
        centre, spread = rng.uniform(0.3, 0.7), 0.1 + 0.4 * (rows - h2)
        path = ground & (np.abs(cols - centre) < spread)
        s.paint(ground, np.array([0.35, 0.55, 0.25], np.float32) * (1 + 0.15 * fine)[..., None], 0.5 * (1 + 0.1 * fine),
                rng.uniform(0.3, 0.45) * (1 + 0.12 * tex))
        s.paint(path, _PALETTE[14] * (1 + 0.08 * fine)[..., None], DYE_NIR[14] * 0.8 * (1 + 0.08 * fine), 0.4)
    else:  # street: facades with dark windows, parked cars, asphalt
        facade, facade_nir = _paint(rng, [2, 14, 17, 15, 1])
        s.paint(band, facade * (1 + 0.08 * tex)[..., None], facade_nir * (1 + 0.08 * tex), rng.uniform(0.15, 0.3) * (1 + 0.25 * fine))
        pitch = rng.uniform(0.08, 0.14)
        windows = band & ((cols % pitch) < pitch * 0.5) & (((rows - h1) % 0.12) < 0.06)
        s.paint(windows, np.array([0.15, 0.2, 0.3], np.float32), 0.05, 0.1)
        for _ in range(int(rng.integers(1, 3))):  # parked cars: warm in thermal, painted in NIR
            x0, y0 = rng.uniform(0, 0.9), rng.uniform(h1, h2)
            car, car_nir = _paint(rng, list(range(len(_PALETTE))))
            inside = (cols >= x0) & (cols < x0 + rng.uniform(0.05, 0.15)) & (rows >= y0) & (rows < y0 + 0.12)
            s.paint(inside, car, car_nir, rng.uniform(0.45, 0.6))
        s.paint(ground, np.array([0.3, 0.3, 0.32], np.float32) * (1 + 0.12 * tex)[..., None], 0.12 * (1 + 0.12 * tex),
                rng.uniform(0.3, 0.45) * (1 + 0.12 * tex))
    return s


@dataclass(frozen=True, eq=False)
class Camera:
    """Fixed properties of one camera (and of its near-infrared twin, for aligned images).

    ``background_vis`` float32 (Hc, Wc, 3), ``background_nir`` and ``background_heat`` float32
    (Hc, Wc), all in [0, 1], are the camera's scene in each band, larger than an image so that
    each image shows a different crop of the same scene; ``canvas`` is (Hc, Wc).
    Visible: ``gain``, ``cast``, ``noise``, ``blur``. Near infrared: ``nir_gain`` (exposure),
    ``nir_falloff`` (k of 1 - k r^2), ``nir_centre`` (lit centre, image fractions y, x),
    ``nir_background`` (lamp light reaching the background relative to the person),
    ``nir_read_noise``, ``nir_shot_noise`` (variance per unit signal), ``nir_blur``.
    Thermal: ``ir_offset``, ``gain``, ``bloom``, ``noise``, ``blur``.
    """

    cam: int
    infrared: bool
    outdoor: bool
    canvas: tuple[int, int]
    background_vis: np.ndarray
    background_nir: np.ndarray
    background_heat: np.ndarray
    gain: float
    cast: np.ndarray
    scale: float
    foot: float
    blur: float
    noise: float
    ir_offset: float
    bloom: float
    nir_gain: float
    nir_falloff: float
    nir_centre: tuple[float, float]
    nir_background: float
    nir_read_noise: float
    nir_shot_noise: float
    nir_blur: float


def camera_attributes(seed: int, cam: int, image_size: tuple[int, int], world: int = 0) -> Camera:
    """The fixed properties of camera ``cam`` (1..6) for ``seed`` and image size (H, W).

    ``world`` 0 is the demo's six cameras; other worlds are other places with the same kinds
    of camera (the ImageNet stand-in renders its images in world 1).
    """
    h, w = image_size
    hc, wc = int(round(h * 1.3)), w * 3
    rng = _rng(seed, _S_CAMERA, world, cam)
    infrared, outdoor = cam in INFRARED_CAMS, cam in (4, 5, 6)
    if cam in (1, 2, 3):
        room = 1 if cam == 1 else 2  # cam3 watches cam2's room
        scene = _indoor_scene(rng, _room_layout(seed, world, room), hc, wc)
    else:
        scene = _outdoor_scene(rng, hc, wc, {4: "gate", 5: "garden", 6: "street"}[cam])
    vis, nir, heat = scene.layers()
    warm = np.array([1.06, 1.0, 0.88] if not outdoor else [0.97, 1.0, 1.05], np.float32)
    return Camera(
        cam=cam, infrared=infrared, outdoor=outdoor, canvas=(hc, wc), background_vis=vis, background_nir=nir, background_heat=heat,
        gain=rng.uniform(0.6, 0.8) if infrared else rng.uniform(0.9, 1.2) if outdoor else rng.uniform(0.75, 1.0),
        cast=(warm * rng.uniform(0.94, 1.06, 3)).astype(np.float32),
        scale=rng.uniform(0.8, 0.88), foot=rng.uniform(0.94, 0.98),
        blur=rng.uniform(0.5, 0.9) if infrared else rng.uniform(0.3, 0.8),
        noise=rng.uniform(0.02, 0.035) if infrared else rng.uniform(0.008, 0.02),
        ir_offset=rng.uniform(0.04, 0.15), bloom=rng.uniform(0.2, 0.6),
        nir_gain=rng.uniform(0.95, 1.25), nir_falloff=rng.uniform(0.25, 0.5),
        nir_centre=(rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)),
        nir_background=rng.uniform(0.45, 0.7) if outdoor else rng.uniform(0.6, 0.85),
        nir_read_noise=rng.uniform(0.01, 0.025), nir_shot_noise=rng.uniform(0.0005, 0.002), nir_blur=rng.uniform(0.4, 0.8),
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
    hc, wc = camera.canvas
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


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float | np.ndarray, blur: float) -> Image.Image:
    """Add sensor noise (std ``noise``, a scalar or per pixel), quantise, blur: float [0, 1]
    (H, W) or (H, W, 3) -> PIL image."""
    img = img + (rng.standard_normal(img.shape).astype(np.float32) * noise)
    out = Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(blur))


def _shading(x: np.ndarray, strength: float) -> np.ndarray:
    """Cylindrical body shading: 1 on the body axis, ``1 - strength`` at the silhouette."""
    return 1.0 - strength * np.minimum((x / 0.17) ** 2, 1.0)


def _draw(ident: Identity, camera: Camera, rng: np.random.Generator, image_size: tuple[int, int]) -> tuple[Pose, np.ndarray, np.ndarray]:
    pose = _pose(rng, ident, camera, image_size)
    lab, x = label_map(ident, pose, image_size)
    return pose, lab, x


def _visible_image(ident: Identity, camera: Camera, pose: Pose, lab: np.ndarray, x: np.ndarray, rng: np.random.Generator,
                   image_size: tuple[int, int]) -> np.ndarray:
    """Colour = dye reflectance x shading x camera gain and colour cast x per-image lighting,
    over the camera's background; then noise and blur. uint8 (H, W, 3)."""
    person = ident.colours[lab] * _shading(x, 0.4)[..., None]
    img = np.where((lab == BG)[..., None], _crop(camera.background_vis, pose, image_size), person)
    rows = np.linspace(1.08, 0.92, image_size[0], dtype=np.float32)[:, None, None]
    light = camera.gain * pose.light * camera.cast * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    img = img * light * (rows if not camera.outdoor else 1.0)
    return np.asarray(_finish(img, rng, camera.noise, camera.blur))


def _nir_image(ident: Identity, camera: Camera, pose: Pose, lab: np.ndarray, x: np.ndarray, rng: np.random.Generator,
               image_size: tuple[int, int]) -> np.ndarray:
    """Near-infrared under the camera's lamp: exposure x lamp fall-off x reflectance (person:
    dye x fibre x shading; background: scene x the light that reaches it), then shot and
    read noise and blur. uint8 (H, W)."""
    h, w = image_size
    person = ident.nir[lab] * _shading(x, 0.45)
    reflectance = np.where(lab == BG, _crop(camera.background_nir, pose, image_size) * camera.nir_background, person)
    ys, xs = _grid(h, w)
    cy, cx = camera.nir_centre
    r2 = (((ys / h - cy) / 0.5) ** 2 + ((xs / w - cx) / 0.5) ** 2) / 2.0  # 0 at the lit centre, ~1 in the corners
    lamp = np.clip(1.0 - camera.nir_falloff * r2, 0.0, 1.0)
    signal = (camera.nir_gain * rng.uniform(0.85, 1.15) * lamp * reflectance).astype(np.float32)
    sigma = np.sqrt(camera.nir_shot_noise * np.clip(signal, 0.0, None) + camera.nir_read_noise**2).astype(np.float32)
    return np.asarray(_finish(signal, rng, sigma, camera.nir_blur))


def _thermal_image(ident: Identity, camera: Camera, pose: Pose, lab: np.ndarray, x: np.ndarray, rng: np.random.Generator,
                   image_size: tuple[int, int]) -> np.ndarray:
    """Thermal (version 2): offset + gain x heat (slightly cooler towards the silhouette) over
    the camera's heat scene, bloom around hot regions, gain jitter, strong noise, blur. uint8 (H, W)."""
    person = ident.heat[lab] * _shading(x, 0.15)
    heat = np.where(lab == BG, _crop(camera.background_heat, pose, image_size), person)
    img = camera.ir_offset + rng.uniform(-0.03, 0.03) + camera.gain * rng.uniform(0.9, 1.1) * heat
    hot = Image.fromarray((np.clip(img - 0.55, 0.0, 1.0) * 255.0).astype(np.uint8))
    glow = np.asarray(hot.filter(ImageFilter.GaussianBlur(3.0)), dtype=np.float32) / 255.0
    img = img + camera.bloom * glow
    return np.asarray(_finish(img, rng, camera.noise, camera.blur))


_INFRARED = {"nir": _nir_image, "thermal": _thermal_image}


def render_visible(ident: Identity, camera: Camera, rng: np.random.Generator, image_size: tuple[int, int],
                   aligned_rng: np.random.Generator | None = None, physics: str = "nir") -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One visible image of ``ident`` seen by ``camera``: uint8 (H, W, 3) RGB.

    With ``aligned_rng``, also the same scene (pose, camera geometry, background) in the
    infrared ``physics`` under the camera's near-infrared twin, its exposure and noise drawn
    from ``aligned_rng``: returns (visible uint8 (H, W, 3), infrared uint8 (H, W)). The
    visible image is the same either way.
    """
    pose, lab, x = _draw(ident, camera, rng, image_size)
    visible = _visible_image(ident, camera, pose, lab, x, rng, image_size)
    if aligned_rng is None:
        return visible
    return visible, _INFRARED[physics](ident, camera, pose, lab, x, aligned_rng, image_size)


def render_infrared(ident: Identity, camera: Camera, rng: np.random.Generator, image_size: tuple[int, int],
                    physics: str = "nir") -> np.ndarray:
    """One infrared image of ``ident`` seen by ``camera``: uint8 (H, W), grey levels.

    ``physics`` "nir": reflectance at ~850 nm under the camera's lamp (module docstring);
    "thermal": heat. The visible colours play no part in either.

    Raises:
        ValueError: unknown ``physics``.
    """
    if physics not in _INFRARED:
        raise ValueError(f"physics must be one of {PHYSICS}, got {physics!r}")
    pose, lab, x = _draw(ident, camera, rng, image_size)
    return _INFRARED[physics](ident, camera, pose, lab, x, rng, image_size)


def pretrain_images(seed: int, n_identities: int, images_per_identity: int, image_size: tuple[int, int],
                    progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Visible images of the ImageNet stand-in's identities (:func:`pretrain_identity`),
    each seen by a random visible camera of world 1 (other places than the demo's cameras).

    Returns:
        (images uint8 (N, H, W, 3), labels int64 (N,) in 0..n_identities-1), N =
        n_identities * images_per_identity, identity-major order.

    Raises:
        ValueError: counts out of range.
    """
    if not 1 <= n_identities <= MAX_PRETRAIN_IDS or images_per_identity < 1:
        raise ValueError(f"need 1..{MAX_PRETRAIN_IDS} identities and >= 1 image each, got {n_identities}, {images_per_identity}")
    cameras = {c: camera_attributes(seed, c, image_size, world=1) for c in VISIBLE_CAMS}
    total = n_identities * images_per_identity
    images = np.empty((total, *image_size, 3), np.uint8)
    labels = np.repeat(np.arange(n_identities, dtype=np.int64), images_per_identity)
    for k in range(n_identities):
        ident = pretrain_identity(seed, k)
        for j in range(images_per_identity):
            rng = _rng(seed, _S_PRETRAIN, k, j)
            camera = cameras[VISIBLE_CAMS[int(rng.integers(len(VISIBLE_CAMS)))]]
            images[k * images_per_identity + j] = render_visible(ident, camera, rng, image_size)
            if progress is not None:
                progress(k * images_per_identity + j + 1, total)
    return images, labels


# --------------------------------------------------------------------------- writing


def _split_ids(seed: int, n_train: int, n_val: int, n_test: int) -> tuple[list[int], list[int], list[int]]:
    """Distinct ids from 1..533 for the three splits, each sorted.

    The ids are a prefix of one seeded permutation, so a larger dataset contains the ids of a
    smaller one made with the same seed.
    """
    ids = _rng(seed, _S_IDS).permutation(np.arange(1, MAX_PID + 1))[: n_train + n_val + n_test]
    parts = np.split(ids, [n_train, n_train + n_val])
    return tuple(sorted(int(i) for i in p) for p in parts)  # type: ignore[return-value]


def _params(n_train: int, n_val: int, n_test: int, image_size: tuple[int, int], physics: str) -> dict[str, object]:
    return {"n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": [int(image_size[0]), int(image_size[1])],
            "physics": physics}


def _validate(seed: int, n_train: int, n_val: int, n_test: int, image_size: tuple[int, int], physics: str) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if min(n_train, n_val, n_test) < 1:  # SYSU-MM01 readers reject an empty id list
        raise ValueError(f"need at least one id per split, got {n_train}, {n_val}, {n_test}")
    if n_train + n_val + n_test > MAX_PID:
        raise ValueError(f"at most {MAX_PID} identities in all, got {n_train + n_val + n_test}")
    if len(image_size) != 2 or image_size[0] < 32 or image_size[1] < 16:
        raise ValueError(f"image_size is (H, W) with H >= 32 and W >= 16, got {image_size!r}")
    if physics not in PHYSICS:
        raise ValueError(f"physics must be one of {PHYSICS}, got {physics!r}")


def read_demo_info(root: Path) -> dict | None:
    """``root/demo_info.json`` as a dict, or None when there is none or it is unreadable."""
    try:
        info = json.loads((Path(root) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def aligned_path(root: Path, image: Path, physics: str = "nir") -> Path:
    """The aligned infrared twin of visible image ``root/cam<k>/<pid>/<n>.jpg``:
    ``root/aligned_nir/cam<k>/<pid>/<n>.jpg`` (``aligned_thermal`` for thermal physics)."""
    rel = Path(image).resolve().relative_to(Path(root).resolve())
    return Path(root) / ALIGNED_DIRS[physics] / rel


def is_complete_demo(out: Path, seed: int, **params: object) -> bool:
    """Whether ``out`` holds a finished demo made by this generator version with these arguments.

    Args:
        out: the dataset folder.
        seed: the seed it should have been made with.
        **params: any of ``n_train``, ``n_val``, ``n_test``, ``image_size``, ``physics``
            (defaults as in :func:`make_demo`).

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
    info = read_demo_info(out)
    if info is None or any(info.get(k) != v for k, v in expected.items()):
        return False
    return all((out / "exp" / f"{s}_id.txt").is_file() for s in ("train", "val", "test"))


def _describe(out: Path) -> str:
    """Why ``out`` cannot be reused, for the one-line error."""
    info = read_demo_info(out)
    try:
        keys = ("generator_version", "seed", "n_train", "n_val", "n_test", "image_size", "physics")
        recorded = ", ".join(f"{k}={info.get(k)}" for k in keys)  # type: ignore[union-attr]
        return f"holds a demo made with different arguments ({recorded})"
    except AttributeError:
        return "exists and is not a complete demo dataset" if out.is_dir() else "exists and is not a folder"


def _save(img: np.ndarray, path: Path) -> None:
    """uint8 (H, W, 3) or grey (H, W) -> RGB JPEG (grey as three equal channels, like SYSU-MM01)."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    Image.fromarray(img).save(path, "JPEG", quality=JPEG_QUALITY)


def _render_into(
    root: Path,
    seed: int,
    plan: list[tuple[int, int, int]],
    image_size: tuple[int, int],
    physics: str,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render every (pid, cam, count) of ``plan`` as ``root/camC/PPPP/NNNN.jpg``, and the
    aligned infrared twin of each visible image under ``root/<aligned dir>/``."""
    total, done = sum(n for _, _, n in plan), 0
    cameras = {c: camera_attributes(seed, c, image_size) for c in VISIBLE_CAMS + INFRARED_CAMS}
    idents: dict[int, Identity] = {}
    for pid, cam, count in plan:
        if pid not in idents:
            idents[pid] = identity_attributes(seed, pid)
        ident = idents[pid]
        camera = cameras[cam]
        rel = Path(f"cam{cam}") / f"{pid:04d}"
        (root / rel).mkdir(parents=True)
        if not camera.infrared:
            (root / ALIGNED_DIRS[physics] / rel).mkdir(parents=True)
        for n in range(1, count + 1):
            rng = _rng(seed, _S_IMAGE, pid, cam, n)
            name = f"{n:04d}.jpg"
            if camera.infrared:
                _save(render_infrared(ident, camera, rng, image_size, physics), root / rel / name)
            else:
                visible, aligned = render_visible(ident, camera, rng, image_size, _rng(seed, _S_ALIGNED, pid, cam, n), physics)
                _save(visible, root / rel / name)
                _save(aligned, root / ALIGNED_DIRS[physics] / rel / name)
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
    physics: str = "nir",
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
        physics: infrared cameras' physics, "nir" (near-infrared reflectance under an active
            lamp, SYSU-MM01 / LLCM-like) or "thermal" (heat, RegDB-like).
        progress: called as ``progress(done, total)`` after each image (aligned twins are
            not counted).

    Returns:
        ``out``.

    Raises:
        UserError: ``out`` exists and is not a matching complete demo (another seed, other
            arguments, another generator version, or some other folder or file). Nothing of
            the user's is deleted.
        ValueError: invalid arguments.
    """
    _validate(seed, n_train, n_val, n_test, image_size, physics)
    out = Path(out)
    params = dict(n_train=n_train, n_val=n_val, n_test=n_test, image_size=tuple(image_size), physics=physics)
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
        _render_into(tmp, seed, plan, tuple(image_size), physics, progress)
        (tmp / "exp").mkdir()
        for name, ids in zip(("train", "val", "test"), splits):
            (tmp / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids))
        info = {"generator_version": GENERATOR_VERSION, "seed": int(seed), **_params(n_train, n_val, n_test, image_size, physics),
                "images": sum(n for _, _, n in plan), "name": "demo", "layout": "SYSU-MM01", "aligned_dir": ALIGNED_DIRS[physics]}
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
