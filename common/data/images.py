"""Reading image files into uint8 arrays, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import UserError


def read_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file as RGB and resize it.

    Resizing uses Lanczos filtering, as AGW's pre-processing (``Image.ANTIALIAS``, which
    is Lanczos in Pillow). Modes: RGB as is; 8-bit grayscale (infrared) and palette images
    come out with three equal channels / their colours; RGBA and LA drop the alpha channel;
    16- and 32-bit single-channel images (raw thermal PNG/TIFF) are stretched linearly from
    their own minimum and maximum to 0-255 (what thermal cameras' automatic gain control
    shows) before resizing, instead of being clipped at 255 as ``convert("RGB")`` would.

    Args:
        path: image file (JPEG, PNG, ...).
        size: (H, W) target size in pixels, height first.

    Returns:
        uint8 array (H, W, 3), values 0-255.

    Raises:
        UserError: if the file is missing or cannot be decoded (names the file).
    """
    try:
        with Image.open(path) as img:
            return image_to_array(img, size)
    except FileNotFoundError:
        raise UserError(f"image {path} is missing; restore the dataset copy or re-run its generation") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"image {path} is corrupt ({exc}); replace it with a good copy from the original dataset") from None


def image_to_array(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """An opened PIL image as RGB uint8 at ``size``: :func:`read_image`'s conversion and resize.

    The one place where the array cache, the test protocol and ``pipeline extract`` turn a
    picture into the network's input pixels, so that all three see the same pixels.

    Args:
        img: a PIL image of any mode :func:`read_image` accepts (decoded lazily: PIL errors
            for a corrupt file surface here).
        size: (H, W) target size in pixels, height first.

    Returns:
        uint8 array (H, W, 3), values 0-255.
    """
    height, width = size
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _stretch_to_8bit(np.asarray(img))
    img = img.convert("RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _stretch_to_8bit(values: np.ndarray) -> Image.Image:
    """A 16/32-bit single-channel image linearly mapped from [min, max] to 0-255 (L mode)."""
    v = values.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    scaled = np.zeros_like(v) if hi <= lo else (v - lo) * (255.0 / (hi - lo))
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


#: ITU-R BT.601 luma weights of R, G, B (PIL's ``convert("L")``): the one copy the code uses.
BT601 = (0.299, 0.587, 0.114)


def to_grayscale_bt601(images: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma replicated to three channels, as PIL's ``convert("L")``.

    L = 0.299 R + 0.587 G + 0.114 B (the visible-grayscale input of TSME's DSGAN).

    Args:
        images: uint8 (..., H, W, 3).

    Returns:
        uint8 (..., H, W, 3) with three equal channels.
    """
    luma = images[..., 0] * BT601[0] + images[..., 1] * BT601[1] + images[..., 2] * BT601[2]
    luma = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)
