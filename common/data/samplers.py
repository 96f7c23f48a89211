"""Cross-modality identity sampler: P identities x K visible x K infrared per batch.

AGW (mangye16/Cross-Modal-Re-ID-baseline:utils.py ``IdentitySampler``): each step draws P
identities without replacement and, per identity, K visible and K infrared images *with*
replacement; the visible and infrared halves list the identities in the same order.
TSME's sampler draws images without replacement; ``replace=False`` does that, falling
back to replacement for an identity with fewer than K images of a modality (SYSU-MM01 has
identities with only a few images per camera), whatever the other identities hold. An
epoch has ``int(N / (P * K)) + 1`` steps with N = max(#visible, #infrared) unless told
otherwise: AGW's ``IdentitySampler`` loops ``for j in range(int(N / (batchSize * num_pos))
+ 1)`` (696 steps on SYSU-MM01's 22,258 visible training images with 8 x 4); TSME's sampler
file is not published with its code, so it gets the same rule.

Batches are drawn with whole-array NumPy operations (no per-image Python loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import UserError


@dataclass(frozen=True)
class Batch:
    """One step's indices into the training split.

    Attributes:
        vis: int64 (P*K,) visible image indices, identity-major (id0 x K, id1 x K, ...).
        ir: int64 (P*K,) infrared image indices, same identity order.
        labels: int64 (P*K,) class labels (0..C-1) of both halves.
    """

    vis: np.ndarray
    ir: np.ndarray
    labels: np.ndarray


class _Groups:
    """Indices of one modality grouped by class, as one flat array plus offsets."""

    def __init__(self, indices: np.ndarray, classes: np.ndarray, num_classes: int) -> None:
        order = np.argsort(classes, kind="stable")
        self.flat = indices[order]
        self.counts = np.bincount(classes, minlength=num_classes)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def draw(self, rng: np.random.Generator, chosen: np.ndarray, k: int, replace: bool) -> np.ndarray:
        """K positions per chosen class: (P * K,) image indices, class-major."""
        counts = self.counts[chosen]  # (P,)
        pos = np.floor(rng.random((len(chosen), k)) * counts[:, None]).astype(np.int64)  # with replacement
        enough = counts >= k  # without replacement where a class holds at least K images
        if not replace and enough.any():
            width = int(counts[enough].max())  # >= k
            keys = rng.random((int(enough.sum()), width))
            keys[np.arange(width)[None, :] >= counts[enough, None]] = np.inf  # padding sorts last
            pos[enough] = np.argsort(keys, axis=1)[:, :k]
        return self.flat[self.offsets[chosen][:, None] + pos].reshape(-1)


class IdentitySampler:
    """Draws :class:`Batch` es for one epoch from a seeded generator.

    Args:
        pids: int64 (N,) identity of every training image.
        is_ir: bool (N,) modality of every training image.
        ids_per_batch: P; images_per_id: K (per modality).
        replace: draw images with replacement (AGW) or without (TSME).
        steps_per_epoch: 0 = int(max(#visible, #infrared) / (P * K)) + 1 (AGW).
        rank, world_size: distributed training; the epoch's sequence of batches is drawn
            as if by one process and rank r keeps steps r, r + W, ...; every rank takes the
            same number of steps, ``max(1, steps // W)`` (DistributedDataParallel needs
            equal step counts), so the ranks together cover one epoch.

    Raises:
        UserError: fewer than P identities with images in both modalities; K larger than
            every identity's image count in both modalities.
    """

    def __init__(
        self,
        pids: np.ndarray,
        is_ir: np.ndarray,
        ids_per_batch: int,
        images_per_id: int,
        *,
        replace: bool = True,
        steps_per_epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        pids = np.asarray(pids)
        is_ir = np.asarray(is_ir, dtype=bool)
        both = np.intersect1d(pids[~is_ir], pids[is_ir])
        self.class_pids = both  # class label c <-> pid class_pids[c]
        keep = np.isin(pids, both)
        labels = np.searchsorted(both, pids)
        idx = np.arange(len(pids))
        if len(both) < ids_per_batch:
            raise UserError(
                f"only {len(both)} training identities have both visible and infrared images but a batch needs "
                f"{ids_per_batch}; lower ids_per_batch in the recipe or use more training identities"
            )
        widest = max(int(np.bincount(labels[keep & m]).max()) for m in (~is_ir, is_ir))
        if images_per_id > widest:
            raise UserError(
                f"images_per_id (K) = {images_per_id} but no training identity has more than {widest} images of either modality; "
                f"lower images_per_id in the recipe to at most {widest}"
            )
        self.labels_of_image = np.where(keep, labels, -1)
        self.vis = _Groups(idx[keep & ~is_ir], labels[keep & ~is_ir], len(both))
        self.ir = _Groups(idx[keep & is_ir], labels[keep & is_ir], len(both))
        self.p, self.k, self.replace = ids_per_batch, images_per_id, replace
        n_max = max(int((keep & ~is_ir).sum()), int((keep & is_ir).sum()))
        self.steps_total = steps_per_epoch or n_max // (ids_per_batch * images_per_id) + 1
        self.rank, self.world_size = rank, world_size

    @property
    def num_classes(self) -> int:
        return len(self.class_pids)

    def __len__(self) -> int:
        """Steps this rank takes per epoch (equal on every rank)."""
        return max(1, self.steps_total // self.world_size)

    def epoch(self, seed: int):
        """Yield this rank's batches of one epoch, drawn from ``np.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        for step in range(len(self) * self.world_size):
            chosen = rng.choice(self.num_classes, self.p, replace=False)
            vis = self.vis.draw(rng, chosen, self.k, self.replace)
            ir = self.ir.draw(rng, chosen, self.k, self.replace)
            if step % self.world_size == self.rank:
                yield Batch(vis, ir, np.repeat(chosen, self.k).astype(np.int64))
