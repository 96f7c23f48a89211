"""``pipeline search``: rank a gallery for each query picture, in bounded memory.

The distance is the protocol's: cosine distance ``1 - q . g`` of the L2-normalised test
features (:mod:`stage2_fusion.evaluate` ranks by ``-q . g``, the same order). The gallery is
either a folder of images (embedded batch by batch) or a feature file of ``pipeline
extract`` (read block by block, never re-extracted, refused when another checkpoint or other
settings made it). Either way only one block of gallery features and a (Q, block) distance
matrix exist at a time: :class:`TopK` keeps the best k per query as the blocks stream by
(a chunked top-k in torch), so a gallery of millions of images needs memory for one block.

Ties: equal distances rank the earlier gallery row first, so an image that is both query
and gallery item (distance 0 to itself) comes first unless an exact duplicate precedes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UserError
from pipelines.inference import MODALITY_WORDS, ReidExtractor, list_images, read_picture

#: Query x gallery distances, and gallery feature values, held at once (float32): 2^24 = 64 MiB each.
MAX_SCORES = 1 << 24


class TopK:
    """The k smallest cosine distances per query over a gallery that arrives in blocks.

    Args:
        queries: float32 (Q, D) L2-normalised query features.
        k: how many gallery items to keep per query (>= 1).
        device: where the distances are computed.

    Shapes:
        ``update(start, block)``: block float32 (n, D), gallery rows start .. start + n - 1,
        blocks in increasing ``start``. ``result()`` -> (rows int64 (Q, k'), distances
        float32 (Q, k')), k' = min(k, gallery rows seen), ascending distance, equal distances
        by row (where a tie straddles the k-th place inside one block, either row may be kept).

    Raises:
        ValueError: ``k < 1``; a block of another width D.
    """

    def __init__(self, queries: np.ndarray, k: int, device: torch.device) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.device = device
        self.queries = torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32), device=device)  # (Q, D)
        q = len(self.queries)
        self.rows = torch.empty(q, 0, dtype=torch.int64, device=device)
        self.dist = torch.empty(q, 0, dtype=torch.float32, device=device)

    def update(self, start: int, block: np.ndarray) -> None:
        """Merge gallery rows ``start .. start + len(block) - 1`` (float32 (n, D)) into the best k."""
        g = torch.as_tensor(np.require(block, np.float32, ["C", "W"]), device=self.device)  # (n, D); "W": a copy of read-only blocks
        if g.ndim != 2 or g.shape[1] != self.queries.shape[1]:
            raise ValueError(f"gallery block {tuple(g.shape)} does not match query features of width {self.queries.shape[1]}")
        dist = 1.0 - self.queries @ g.T  # (Q, n) cosine distance
        kk = min(self.k, g.shape[0])
        d, r = torch.topk(dist, kk, dim=1, largest=False)  # (Q, kk); ties in any order
        r = r + start
        order = torch.argsort(r, dim=1)  # within the block: rows ascending, then a stable sort by distance
        d, r = d.gather(1, order), r.gather(1, order)
        d, r = torch.cat([self.dist, d], dim=1), torch.cat([self.rows, r], dim=1)  # earlier rows first
        best = torch.sort(d, dim=1, stable=True).indices[:, : self.k]
        self.dist, self.rows = d.gather(1, best), r.gather(1, best)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(gallery rows int64 (Q, k'), cosine distances float32 (Q, k')), nearest first."""
        return self.rows.cpu().numpy(), self.dist.cpu().numpy()


def block_rows(num_queries: int, dim: int, max_scores: int = MAX_SCORES) -> int:
    """Gallery rows per block so that neither the (Q, rows) distances nor the (rows, D) gallery
    features of a block hold more than ``max_scores`` float32 values."""
    return max(1, max_scores // max(1, num_queries, dim))


def check_gallery_file(meta: dict[str, Any], path: Path, extractor: ReidExtractor, gallery_modality: str) -> None:
    """Refuse a feature file that another checkpoint or other settings made.

    Raises:
        UserError: another checkpoint (SHA-256), another modality, BNNeck side or flip.
    """
    word = MODALITY_WORDS[extractor.modality(gallery_modality)]
    again = (f"pipeline extract --checkpoint {extractor.path} --images GALLERY --modality {word}"
             f"{' --flip' if extractor.flip else ''} --out {path}")
    if meta["checkpoint_sha256"] != extractor.sha256:
        raise UserError(f"gallery {path} was extracted with another checkpoint ({meta['checkpoint']}, SHA-256 "
                        f"{meta['checkpoint_sha256'][:12]}..., not {extractor.sha256[:12]}...): features of two models are not "
                        f"comparable; re-extract it: {again}")
    if meta["modality"] != word:
        raise UserError(f"gallery {path} holds {meta['modality']} features, but --gallery-modality is {word}; "
                        f"pass --gallery-modality {meta['modality']} or re-extract it: {again}")
    if meta["feature"] != extractor.feature or meta["flip"] != extractor.flip:
        raise UserError(f"gallery {path} holds feature {meta['feature']} flip {meta['flip']}, the query side uses feature "
                        f"{extractor.feature} flip {extractor.flip}; re-extract it: {again}")


def search(extractor: ReidExtractor, query: list[str | Path], gallery: str | Path, *, query_modality: str,
           gallery_modality: str, top: int = 10, batch_size: int | None = None, max_scores: int = MAX_SCORES) -> dict[str, Any]:
    """Rank the gallery for every query image.

    Args:
        extractor: the model.
        query: image files and/or folders of images (the queries).
        gallery: a folder of images, an image file, or a feature file (``.npz``) of
            ``pipeline extract`` made with the same checkpoint.
        query_modality, gallery_modality: "visible" / "infrared" (or "vis" / "ir").
        top: k, gallery items per query (>= 1).
        batch_size: images per forward pass.
        max_scores: float32 values of one block, of query x gallery distances and of gallery
            features alike (the memory bound; 2^24 = 64 MiB each).

    Returns:
        ``{"query_modality", "gallery_modality", "gallery_size", "top", "method",
        "checkpoint_sha256", "queries": [{"query": path, "results": [{"rank": 1, "path",
        "distance"}, ...]}, ...]}``, distances ``1 - cos`` ascending (rank 1 = nearest).

    Raises:
        UserError: ``top < 1``, no queries, an empty gallery folder, unreadable images, a
            feature file of another checkpoint / modality / feature (see
            :func:`check_gallery_file`), modalities the checkpoint lacks.
    """
    from pipelines.feature_file import open_feature_file

    if top < 1:
        raise UserError(f"--top {top}: ask for at least 1 gallery item per query")
    q_stream, g_stream = extractor.modality(query_modality), extractor.modality(gallery_modality)
    gallery = Path(gallery)
    store = None
    if gallery.suffix.lower() == ".npz" and not gallery.is_dir():  # checked before any query is embedded
        store = open_feature_file(gallery)
        check_gallery_file(store.meta, gallery, extractor, g_stream)
    query_paths, _ = list_images(query)
    q_feats = extractor.extract(query_paths, q_stream, batch_size=batch_size)  # (Q, D)
    rows = block_rows(len(query_paths), extractor.dim, max_scores)
    ranking = TopK(q_feats, top, extractor.device)
    if store is not None:
        if store.count == 0:
            raise UserError(f"gallery {gallery} holds no features; extract a gallery with at least one image")
        for start, block in store.chunks(rows):
            ranking.update(start, block)
        order, dist = ranking.result()
        names = store.paths(order).reshape(order.shape)  # the top-k rows' paths only
        gallery_size = store.count
    else:
        found, _ = list_images([gallery])
        size = min(rows, batch_size or extractor.batch_size)
        for start, block in extractor.batches(found, g_stream, batch_size=size, show_progress=True):
            ranking.update(start, block)
        order, dist = ranking.result()
        names = np.asarray([str(p) for p in found])[order]
        gallery_size = len(found)
    queries = [{"query": str(path), "results": [{"rank": rank + 1, "path": str(n), "distance": max(0.0, float(d))}
                                                 for rank, (n, d) in enumerate(zip(names[i], dist[i]))]}
               for i, path in enumerate(query_paths)]
    return {"query_modality": MODALITY_WORDS[q_stream], "gallery_modality": MODALITY_WORDS[g_stream], "gallery_size": gallery_size,
            "top": int(order.shape[1]), "method": extractor.method, "checkpoint_sha256": extractor.sha256, "queries": queries}


def format_search(result: dict[str, Any]) -> str:
    """One block per query: its path, then a table of rank, distance and gallery path."""
    lines = []
    for q in result["queries"]:
        lines.append(f"query {q['query']} ({result['query_modality']}) -> {result['gallery_modality']} gallery of "
                     f"{result['gallery_size']}, distance = 1 - cosine")
        lines.append(f"{'rank':>4}  {'distance':>8}  path")
        lines += [f"{r['rank']:>4}  {r['distance']:>8.4f}  {r['path']}" for r in q["results"]]
    return "\n".join(lines)


def search_grid(result: dict[str, Any], size: tuple[int, int], out: Path) -> Path:
    """The queries and their ranked gallery images as a PNG grid (``show-ranks``' style).

    The identities are unknown to a search, so frames are neutral gray; each gallery image
    is captioned with its rank and distance.

    Raises:
        UserError: an image that can no longer be read; ``out`` unwritable.
    """
    from pipelines.rank_grid import RankRow, render_rank_grid, save_png

    rows = []
    for q in result["queries"]:
        hits = q["results"]
        rows.append(RankRow(
            query=read_picture(Path(q["query"]), size), query_text=f"query\n{_short(q['query'])}",
            gallery=np.stack([read_picture(Path(h["path"]), size) for h in hits]), correct=None,
            captions=[f"{h['rank']} d {h['distance']:.3f}\n{_short(h['path'])}" for h in hits],
        ))
    k = min(len(r.gallery) for r in rows)
    rows = [RankRow(r.query, r.query_text, r.gallery[:k], None, r.captions[:k]) for r in rows]
    title = (f"search: {result['query_modality']} query -> {result['gallery_modality']} gallery ({result['method']}); "
             "d = 1 - cos, rank 1 = nearest")
    save_png(render_rank_grid(rows, title=title), Path(out))
    return Path(out)


def _short(path: str) -> str:
    """The last folder and the file name, at most 14 characters (a grid caption)."""
    text = "/".join(Path(path).parts[-2:])
    return text if len(text) <= 14 else "..." + text[-11:]
