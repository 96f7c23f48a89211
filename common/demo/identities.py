"""The demo's people: attribute grid, identities, dyes and materials, and where each identity is seen.

Shared by the other demo modules: the independent random streams (:func:`_rng`), the
material labels of the label map, the dye palette with its near-infrared reflectances,
fibres, skin and hair; then :class:`Identity` (what one person wears and looks like),
:func:`identity_attributes` for the demo's identities, :func:`pretrain_identity` for the
ImageNet stand-in's (other cells of the attribute grid), and the cameras each identity
passes. Sources of the reflectances: the package docstring (:mod:`common.demo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from common.data.images import BT601

VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
INFRARED_CAMS: tuple[int, ...] = (3, 6)
MAX_PID = 533  # SYSU-MM01's identity numbers run from 1 to 533
MAX_PRETRAIN_IDS = 4000  # identities the ImageNet stand-in may draw (other attribute cells)
PHYSICS: tuple[str, ...] = ("nir", "thermal")

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
_LUMA = _PALETTE @ np.array(BT601, np.float32)
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
