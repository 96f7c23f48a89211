"""Training throughput: our stage-2 loop against the seed repositories' way, same model.

Both loops train the same freshly initialised model (``--method``, default AGW) on the same
decoded training split, with the same P x K x 2 batches from the same identity sampler,
the same optimiser and the same augmentation recipe (zero-pad + random crop, horizontal
flip, ImageNet normalisation):

* **reference** (mangye16/Cross-Modal-Re-ID-baseline: ``SYSUData`` + ``train.py``): a
  Dataset holding the pre-resized uint8 arrays; each item goes through
  ``PIL.Image.fromarray`` and torchvision's Pad / RandomCrop / RandomHorizontalFlip /
  ToTensor / Normalize in DataLoader workers; fp32, contiguous (NCHW) tensors;
* **ours** (:mod:`stage2_fusion.train`): workers only slice uint8 arrays into pinned
  batches; conversion, normalisation and augmentation run batched on the training device
  (kornia); bf16 autocast (fp16 + GradScaler where bf16 is missing) and channels_last on
  CUDA; optional ``torch.compile``.

Timing: ``--warmup`` steps, then ``--steps`` timed steps (the device synchronised before
and after); images/s counts the real images of a step (2 * P * K). The last line is
``train speedup: N.Nx`` (ours / reference).

``--method tsme`` compares instead the two ways stage 2 gets its generated partners, same
TSME model, same batches: from the partner cache (read by the workers beside the images) and
on the fly (TSME's own way: the frozen generators translate every batch inside the step).
Its last line is ``partner cache vs on-the-fly: N.Nx``.

    python benchmarks/bench_train.py                 # CPU, demo profile, demo data
    python benchmarks/bench_train.py --device cuda --profile paper --workers 8
    python benchmarks/bench_train.py --method tsme   # partner cache vs on-the-fly partners
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

from PIL import Image
from torchvision import transforms as T

from common.data.array_cache import load_split
from common.data.augment import IMAGENET_MEAN, IMAGENET_STD, ReidTrainAugment, to_float_images
from stage2_fusion.methods import load_config
from common.datasets import load_dataset
from common.demo.writing import make_demo
from common.runtime import autocast, resolve_device
from common.data.samplers import IdentitySampler
from stage2_fusion.train import EpochBatches, build_for_training


class ReferenceDataset(torch.utils.data.Dataset):
    """One P x K x 2 batch per item, each image through PIL + torchvision (AGW's way)."""

    def __init__(self, batches, images: np.ndarray, size: tuple[int, int], pad: int) -> None:
        self.batches, self.images = batches, images
        self.transform = T.Compose([
            T.Pad(pad), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        b = self.batches[i]
        idx = np.concatenate([b.vis, b.ir])
        x = torch.stack([self.transform(Image.fromarray(np.asarray(self.images[j]))) for j in idx])
        return x, torch.from_numpy(np.concatenate([b.labels, b.labels]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_reference(cfg, method, split, sampler, device, args) -> float:
    model, loss_fn, optimizer, _, recipe = build_for_training(cfg, method, sampler.num_classes, device)
    model = model.to(memory_format=torch.contiguous_format).train()
    batches = list(sampler.epoch(0))
    loader = torch.utils.data.DataLoader(ReferenceDataset(batches, split.images, (cfg.data.height, cfg.data.width), recipe.pad),
                                         batch_size=None, num_workers=args.workers, pin_memory=device.type == "cuda")
    return _timed_loop(loader, lambda item: item, model, loss_fn, optimizer, recipe, device, args, amp=False)


def run_ours(cfg, method, split, sampler, device, args) -> float:
    model, loss_fn, optimizer, _, recipe = build_for_training(cfg, method, sampler.num_classes, device)
    model.train()
    step_model = torch.compile(model) if args.compile else model
    augment = ReidTrainAugment((cfg.data.height, cfg.data.width), recipe.pad, recipe.flip_p)
    loader = torch.utils.data.DataLoader(EpochBatches(list(sampler.epoch(0)), split.images, None),
                                         batch_size=None, num_workers=args.workers, pin_memory=device.type == "cuda")

    def prepare(item):
        images_u8, _, labels, _ = item
        x, _ = augment(to_float_images(images_u8, device))
        return x, labels

    return _timed_loop(loader, prepare, step_model, loss_fn, optimizer, recipe, device, args, amp=True)


def run_tsme(cfg, split, sampler, device, args, tmp: Path) -> tuple[float, float]:
    """TSME steps/s with partners from a partner cache and with on-the-fly translation."""
    from common.checkpoint import save_checkpoint
    from common.config import config_section_dict
    from common.data.partner_cache import open_partner_cache
    from stage1_dsgan.generate import generate_pairs, load_generators, make_translator
    from stage1_dsgan.networks import build_dsgan

    torch.manual_seed(0)
    gan = build_dsgan(cfg.gan)
    gan_path = tmp / "gan.pt"
    h, w = cfg.data.height, cfg.data.width
    save_checkpoint(gan_path, "dsgan", {"gan": config_section_dict(cfg.gan), "image_size": [h, w],
                                        "g_vis2ir": gan.g_vis2ir.state_dict(), "g_ir2vis": gan.g_ir2vis.state_dict()})
    generate_pairs(gan_path, split, tmp / "pairs", device, dataset="demo", data_root=tmp)
    cache = open_partner_cache(tmp / "pairs", dataset="demo", data_fingerprint=split.fingerprint, image_size=(h, w), count=len(split))
    translate = make_translator(load_generators(gan_path, device), device, amp=cfg.gan.amp)
    rates = []
    for source in ("cache", "on-the-fly"):
        model, loss_fn, optimizer, _, recipe = build_for_training(cfg, "tsme", sampler.num_classes, device)
        model.train()
        augment = ReidTrainAugment((h, w), recipe.pad, recipe.flip_p)
        loader = torch.utils.data.DataLoader(EpochBatches(list(sampler.epoch(0)), split.images, cache if source == "cache" else None),
                                             batch_size=None, num_workers=args.workers, pin_memory=device.type == "cuda")
        it = iter(loader)
        n_images, start = 0, None
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                _sync(device)
                start = time.perf_counter()
            images_u8, partners_u8, labels, _ = next(it)
            n = labels.shape[0] // 2
            is_ir = torch.arange(2 * n) >= n
            if source == "on-the-fly":
                partners_u8 = translate(images_u8, is_ir)  # TSME: the frozen generators, every step
            x, p = augment(to_float_images(images_u8, device), to_float_images(partners_u8, device))
            labels = labels.to(device, non_blocking=True)
            with autocast(device, True):
                outputs = model({"vis": x[:n], "ir": x[n:]}, {"vis": p[:n], "ir": p[n:]})
            losses = loss_fn(outputs, labels, is_ir.to(device), recipe)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            if step >= args.warmup:
                n_images += 2 * n
        _sync(device)
        rates.append(n_images / (time.perf_counter() - start))
    return rates[0], rates[1]


def _timed_loop(loader, prepare, model, loss_fn, optimizer, recipe, device, args, amp: bool) -> float:
    it = iter(loader)
    n_images = 0
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        x, labels = prepare(next(it))
        x = x.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        n = labels.shape[0] // 2
        is_ir = torch.arange(2 * n, device=device) >= n
        with autocast(device, amp):
            outputs = model({"vis": x[:n], "ir": x[n:]})
        losses = loss_fn(outputs, labels, is_ir, recipe)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        if step >= args.warmup:
            n_images += 2 * n
    _sync(device)
    return n_images / (time.perf_counter() - start)


NO_IMAGENET = {"gan": {"pretrained": "none"}, "fusion": {"backbone": {"pretrained": "none"}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"])
    parser.add_argument("--method", default="agw", choices=["agw", "tsme"],
                        help="agw: ours vs the PIL + torchvision reference; tsme: partner cache vs on-the-fly partners")
    parser.add_argument("--data-root", type=Path, default=None, help="demo dataset folder (generated into a temp dir if absent)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    cfg = load_config(args.profile, overrides=NO_IMAGENET)  # throughput does not depend on the weights
    tmp = tempfile.TemporaryDirectory()
    root = args.data_root or make_demo(Path(tmp.name) / "demo", 0)
    index = load_dataset("demo", root)
    split = load_split(index.train, (cfg.data.height, cfg.data.width), cache_dir=Path(tmp.name) / "cache", tag="bench")
    recipe = cfg.fusion.recipe(args.method)
    needed = args.warmup + args.steps
    sampler = IdentitySampler(split.pids, split.is_ir, recipe.ids_per_batch, recipe.images_per_id, steps_per_epoch=needed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; profile {args.profile}; {args.method} at {cfg.data.height}x{cfg.data.width}, "
          f"batch {recipe.ids_per_batch} ids x {recipe.images_per_id} x 2 modalities; {args.steps} timed steps after "
          f"{args.warmup} warm-up; {args.workers} workers")
    if args.method == "tsme":
        cached, on_the_fly = run_tsme(cfg, split, sampler, device, args, Path(tmp.name))
        print(f"TSME with partners from the partner cache: {cached:8.1f} images/s")
        print(f"TSME translating partners on the fly (TSME's way): {on_the_fly:8.1f} images/s")
        print(f"partner cache vs on-the-fly: {cached / on_the_fly:.2f}x")
        return
    reference = run_reference(cfg, args.method, split, sampler, device, args)
    print(f"reference (PIL + torchvision in workers, fp32): {reference:8.1f} images/s")
    ours = run_ours(cfg, args.method, split, sampler, device, args)
    amp = "bf16/fp16 autocast, channels_last" if device.type == "cuda" else "fp32 (no autocast on CPU)"
    print(f"ours (uint8 slices, kornia on {device.type}, {amp}{', compiled' if args.compile else ''}): {ours:8.1f} images/s")
    print(f"train speedup: {ours / reference:.1f}x")


if __name__ == "__main__":
    main()
