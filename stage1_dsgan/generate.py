"""Stage 1 output: a generated partner for every training image, and on-the-fly translation.

The generators run in eval mode (BatchNorm uses its running statistics; TSME's code left
them in train mode during stage 2, which drifts them, a pitfall we avoid), batched on the
training device, under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.data.array_cache import ArraySplit
from common.data.augment import from_gan_domain, to_float_images
from common.checkpoint import file_sha256, load_checkpoint
from common.errors import UserError
from common.data.partner_cache import PartnerCacheInputs, PartnerCacheWriter
from common.runlog import info, progress_bar
from common.runtime import autocast
from stage1_dsgan.networks import DSGANGenerator

Translate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Generators:
    """The two trained generators of a ``gan.pt`` plus what they were trained for."""

    g_vis2ir: DSGANGenerator
    g_ir2vis: DSGANGenerator
    image_size: tuple[int, int]
    path: Path
    sha256: str


def load_generators(path: Path, device: torch.device) -> Generators:
    """Load both generators of a DSGAN checkpoint, in eval mode, on ``device``.

    Raises:
        UserError: missing file, or a file that is not a DSGAN ``gan.pt`` (e.g. a re-ID
            checkpoint or a ``last.pt`` of an unfinished run).
    """
    path = Path(path)
    state = load_checkpoint(path, "dsgan")
    if "g_vis2ir" not in state:
        raise UserError(f"{path} is an unfinished GAN training checkpoint; finish training (pipeline train-gan) and pass its gan.pt")
    gan = state["gan"]
    gens = []
    for name in ("g_vis2ir", "g_ir2vis"):
        # 3 channels and gray input: checkpoints written before those options existed
        g = DSGANGenerator(gan["base_width"], tuple(gan["encoder_layers"]), gan.get("out_channels", 3),
                           gan.get("input", "gray") if name == "g_vis2ir" else "gray")
        g.load_state_dict(state[name])
        gens.append(g.to(device).eval().requires_grad_(False))
    return Generators(gens[0], gens[1], tuple(state["image_size"]), path, file_sha256(path))


def make_translator(gens: Generators, device: torch.device, amp: bool = True) -> Translate:
    """A ``translate(images, is_ir)`` callable for stage 2 (on-the-fly partners, test time).

    Args (of the returned callable):
        images: uint8 (B, H, W, 3) tensor, any device.
        is_ir: bool (B,) tensor; True rows are infrared (translated to visible-gray), False
            rows visible (translated to infrared).

    Returns (of the callable):
        uint8 (B, H, W, 3) CPU tensor of partners.
    """

    @torch.no_grad()
    def translate(images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
        x = to_float_images(images, device)  # (B, 3, H, W) in [0, 1]
        out = torch.empty_like(x)
        is_ir = is_ir.to(device)
        with autocast(device, amp):
            for generator, rows in ((gens.g_vis2ir, ~is_ir), (gens.g_ir2vis, is_ir)):
                if rows.any():
                    out[rows] = generator(generator.prepare(x[rows])).to(out.dtype)  # each generator's own input
        return from_gan_domain(out)

    return translate


def generate_pairs(
    gan_checkpoint: Path,
    train: ArraySplit,
    out: Path,
    device: torch.device,
    *,
    dataset: str,
    data_root: Path,
    batch_size: int = 64,
    shard_size: int = 1024,
) -> Path:
    """Translate every training image into the other modality and store the partner cache.

    A killed run resumes: finished shards are kept (checked by SHA-256) and only the rest
    is generated, so the result equals an uninterrupted run.

    Args:
        gan_checkpoint: the ``gan.pt`` of stage 1.
        train: the training split (its order defines the cache's order).
        out: the cache folder.
        device: where the generators run.
        dataset, data_root: recorded in the manifest (for the rebuild command).
        batch_size: images per generator call; shard_size: images per shard.

    Returns:
        Path of the cache folder.

    Raises:
        UserError: GAN trained at another image size; ``out`` holding something else.
    """
    gens = load_generators(gan_checkpoint, device)
    h, w = train.images.shape[1:3]
    if tuple(gens.image_size) != (h, w):
        raise UserError(
            f"{gan_checkpoint} was trained at {gens.image_size[0]}x{gens.image_size[1]} but the data is prepared at {h}x{w}; "
            "use the same profile (data.height/width) for both stages"
        )
    inputs = PartnerCacheInputs(
        generator=str(gan_checkpoint), generator_sha256=gens.sha256, dataset=dataset, data_root=str(data_root),
        data_fingerprint=train.fingerprint, image_size=(h, w), count=len(train),
    )
    writer = PartnerCacheWriter(out, inputs, shard_size)
    todo = [i for i in range(writer.num_shards) if not writer.done(i)]
    if len(todo) < writer.num_shards:
        info(f"generate-pairs: resuming, {writer.num_shards - len(todo)} of {writer.num_shards} shards already complete")
    translate = make_translator(gens, device)
    total = sum(writer.shard_range(i)[1] - writer.shard_range(i)[0] for i in todo)
    with progress_bar(total, "generating pairs", unit="img") as advance:
        for index in todo:
            start, stop = writer.shard_range(index)
            partners = np.empty((stop - start, h, w, 3), dtype=np.uint8)
            for b in range(start, stop, batch_size):
                e = min(b + batch_size, stop)
                images = torch.from_numpy(np.array(train.images[b:e]))  # copy out of the read-only memmap
                partners[b - start : e - start] = translate(images, torch.from_numpy(train.is_ir[b:e])).numpy()
                advance(e - b)
            if gens.g_vis2ir.out_channels == 1 and not (partners == partners[..., :1]).all():
                raise ValueError("a gray generator (out_channels = 1) produced partners with unequal channels")
            writer.write_shard(index, partners)
    writer.finish()
    info(f"generate-pairs: wrote {len(train)} partners to {out}")
    return Path(out)
