"""Rank-list grids: a query and its top-k gallery images, one row per query (PIL only).

Each row: the query (blue frame) with its identity, camera and AP, then the top-k gallery
images in rank order, each framed green (same identity) or red (another identity), with its
identity and distance written under it. Written atomically as a PNG; also returned as an
array for TensorBoard.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.atomic import atomic_write

GREEN, RED, BLUE, WHITE, BLACK = (30, 170, 60), (210, 40, 40), (40, 90, 220), (255, 255, 255), (20, 20, 20)
GRAY = (150, 150, 150)  # a gallery image whose identity is unknown (pipeline search)


@dataclass(frozen=True)
class RankRow:
    """One query and its ranked gallery.

    Attributes:
        query: uint8 (H, W, 3) image; query_text: caption (e.g. "q pid 12 cam 3\nAP 0.05"; "\n" starts a second line).
        gallery: uint8 (k, H, W, 3) top-k gallery images in rank order.
        correct: bool (k,) same identity as the query; None when identities are unknown
            (a search of unlabelled pictures): gray frames.
        captions: k captions (e.g. "pid 7 d 0.81").
    """

    query: np.ndarray
    query_text: str
    gallery: np.ndarray
    correct: np.ndarray | None
    captions: list[str]


def render_rank_grid(rows: list[RankRow], *, thumb_height: int = 128, border: int = 4, title: str = "") -> np.ndarray:
    """Draw the grid: uint8 (H, W, 3) RGB array.

    Args:
        rows: at least one :class:`RankRow`; every row has the same k and image size.
        thumb_height: each image is scaled to this height (aspect kept, nearest-neighbour
            so that small re-ID crops stay sharp).
        border: frame width in pixels.
        title: optional line at the top.

    Raises:
        ValueError: no rows, or rows of different k.
    """
    if not rows:
        raise ValueError("render_rank_grid needs at least one row")
    k = len(rows[0].gallery)
    if any(len(r.gallery) != k or len(r.captions) != k or (r.correct is not None and len(r.correct) != k) for r in rows):
        raise ValueError("every row needs the same number of gallery images, flags and captions")
    h, w = rows[0].query.shape[:2]
    tw = max(1, round(w * thumb_height / h))
    cell_w, cell_h = tw + 2 * border + 8, thumb_height + 2 * border + 30
    top = 24 if title else 4
    canvas = Image.new("RGB", ((k + 1) * cell_w + 12, top + len(rows) * cell_h), WHITE)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((6, 4), title, fill=BLACK, font=font)

    def paste(img: np.ndarray, x: int, y: int, colour, caption: str) -> None:
        draw.rectangle([x, y, x + tw + 2 * border - 1, y + thumb_height + 2 * border - 1], fill=colour)
        thumb = Image.fromarray(np.ascontiguousarray(img)).resize((tw, thumb_height), Image.Resampling.NEAREST)
        canvas.paste(thumb, (x + border, y + border))
        draw.multiline_text((x, y + thumb_height + 2 * border + 2), caption, fill=BLACK, font=font, spacing=2)

    for r, row in enumerate(rows):
        y = top + r * cell_h
        paste(row.query, 4, y, BLUE, row.query_text)
        for j in range(k):
            colour = GRAY if row.correct is None else (GREEN if row.correct[j] else RED)
            paste(row.gallery[j], 12 + (j + 1) * cell_w, y, colour, row.captions[j])
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 array as a PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(Path(path), lambda fh: fh.write(buffer.getvalue()))
