"""Pair-generation throughput: images/s of ``generate-pairs`` for a profile's generator.

Builds the profile's DSGAN (untrained weights: throughput does not depend on them), writes
it as a ``gan.pt``, and times :func:`stage1_dsgan.generate.generate_pairs` on ``--images``
random uint8 images at the profile's size (batched on the device, shards written, SHA-256
checksums computed: the whole command's work, minus JPEG decoding, which the array cache
does once per dataset). The last line is ``generate-pairs: N.N images/s``.

    python benchmarks/bench_generate.py --profile demo
    python benchmarks/bench_generate.py --profile paper --images 256 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import common  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data.array_cache import ArraySplit
from common.checkpoint import save_checkpoint
from common.config import config_section_dict
from stage2_fusion.methods import load_config
from common.runtime import resolve_device
from stage1_dsgan.generate import generate_pairs
from stage1_dsgan.networks import build_dsgan


NO_IMAGENET = {"gan": {"pretrained": "none"}, "fusion": {"backbone": {"pretrained": "none"}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    device = resolve_device(args.device)
    cfg = load_config(args.profile, overrides=NO_IMAGENET)  # throughput does not depend on the weights
    h, w = cfg.data.height, cfg.data.width
    torch.manual_seed(0)
    model = build_dsgan(cfg.gan)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, h, w, 3), dtype=np.uint8)
    is_ir = np.arange(args.images) % 3 == 0
    split = ArraySplit(images, np.zeros(args.images, np.int64), np.ones(args.images, np.int64), is_ir, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        gan = Path(tmp) / "gan.pt"
        save_checkpoint(gan, "dsgan", {"gan": config_section_dict(cfg.gan), "image_size": [h, w],
                                       "g_vis2ir": model.g_vis2ir.state_dict(), "g_ir2vis": model.g_ir2vis.state_dict()})
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate_pairs(gan, split, Path(tmp) / "pairs", device, dataset="bench", data_root=Path(tmp), batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; profile {args.profile}: generator width {cfg.gan.base_width}, encoder {list(cfg.gan.encoder_layers)}, "
          f"{h}x{w}, {args.images} images in {seconds:.1f} s")
    print(f"generate-pairs: {args.images / seconds:.1f} images/s")


if __name__ == "__main__":
    main()
