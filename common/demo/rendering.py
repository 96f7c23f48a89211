"""Drawing one person seen by one camera: pose, label map, visible, near-infrared and thermal images.

:func:`render_visible` and :func:`render_infrared` turn an :class:`~common.demo.identities.Identity`
and a :class:`~common.demo.scenes.Camera` into uint8 images; :func:`pretrain_images`
renders the ImageNet stand-in's training set (:mod:`common.demo.standin`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from common.demo.identities import (_S_PRETRAIN, BAG, BG, BOT_A, BOT_B, HAIR, HAT, MAX_PRETRAIN_IDS, PHYSICS, SHOES, SKIN, TOP_A, TOP_B,
                                     VISIBLE_CAMS, Identity, _rng, pretrain_identity)
from common.demo.scenes import Camera, camera_attributes

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
