"""The demo's places and cameras: indoor rooms, outdoor scenes and each camera's settings.

:func:`camera_attributes` gives a camera's viewpoint, background scene, lighting and, for
the infrared cameras, the lamp fall-off and sensor noise (package docstring,
:mod:`common.demo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.demo.identities import _PALETTE, _S_CAMERA, _S_ROOM, DYE_NIR, INFRARED_CAMS, _rng

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
