"""Stage 1 training speed: our DSGAN step against a PyTorch-GAN-style CycleGAN loop, same networks.

Both train the same freshly initialised DSGAN of the profile's size (``--profile``, default
demo: width 16, one bottleneck per stage, discriminators 32/32/64/128) on the same decoded
training split, with the same batch size, losses, weights, Adam settings and a 50-image
history pool:

* **reference**, the way TSME's GAN path (eriklindernoren/PyTorch-GAN,
  ``implementations/cyclegan/cyclegan.py``) trains: a Dataset of PIL images, each item
  through torchvision's Grayscale(3) (TSME's ``data_loader.py``) / Resize(1.12 h, bicubic) /
  RandomCrop / RandomHorizontalFlip / ToTensor / Normalize(0.5, 0.5) in the DataLoader; one
  generator step whose backward also fills the discriminators' gradients (they are not
  frozen), then one step per discriminator, each with its own backward; target tensors built
  every step; the replay buffer pushes and pops image by image in Python;
* **ours**, :func:`stage1_dsgan.train.train_gan` itself: uint8 batches sliced from the array
  cache, augmentation batched on the device, discriminators frozen during the generator step,
  one backward for both discriminators, the batched :class:`stage1_dsgan.image_pool.ImagePool`.

Ours is timed as the difference of two whole ``train_gan`` runs of ``--warmup`` and
``--warmup + --steps`` steps (one epoch each, no probe, no epoch selection), so start-up and
the end-of-run checkpoint and grid cancel out; the reference runs ``--warmup`` steps, then
``--steps`` timed ones. The last line is ``GAN step speedup: N.Nx`` (ours / reference).

    python benchmarks/bench_gan.py                        # CPU, demo profile, demo data
    python benchmarks/bench_gan.py --steps 50 --threads 1
"""

from __future__ import annotations

import argparse
import random
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

from stage2_fusion.methods import load_config
from common.runtime import resolve_device, seed_everything
from pipelines.data import load_splits
from stage1_dsgan.networks import build_dsgan
from stage1_dsgan.train import train_gan


class UnalignedImages(torch.utils.data.Dataset):
    """PyTorch-GAN's ``ImageDataset(unaligned=True)`` on in-memory images: item i is visible
    image i and a random infrared image, each through the per-image transform."""

    def __init__(self, vis: np.ndarray, ir: np.ndarray, size: tuple[int, int], crop_scale: float) -> None:
        self.vis, self.ir = [Image.fromarray(v) for v in vis], [Image.fromarray(i) for i in ir]
        h, w = size
        self.transform = T.Compose([T.Grayscale(3), T.Resize((round(h * crop_scale), round(w * crop_scale)), T.InterpolationMode.BICUBIC),
                                    T.RandomCrop((h, w)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self) -> int:
        return len(self.vis)

    def __getitem__(self, i: int):
        return self.transform(self.vis[i]), self.transform(self.ir[random.randrange(len(self.ir))])


class ReplayBuffer:
    """PyTorch-GAN's replay buffer: push and pop one image at a time."""

    def __init__(self, size: int = 50) -> None:
        self.size, self.data = size, []

    def push_and_pop(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.data) < self.size:
                self.data.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.data[i].clone())
                self.data[i] = image
            else:
                out.append(image)
        return torch.cat(out)


def run_reference(cfg, split, device: torch.device, warmup: int, steps: int, workers: int) -> float:
    """Seconds per step of the PyTorch-GAN-style loop (after ``warmup`` steps)."""
    g = cfg.gan
    seed_everything(g.seed)
    model = build_dsgan(g).to(device).train()
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    opt_g = torch.optim.Adam([*model.g_vis2ir.parameters(), *model.g_ir2vis.parameters()], lr=g.lr, betas=(g.beta1, g.beta2))
    opt_d_ir = torch.optim.Adam(model.d_ir.parameters(), lr=g.lr, betas=(g.beta1, g.beta2))
    opt_d_vis = torch.optim.Adam(model.d_vis.parameters(), lr=g.lr, betas=(g.beta1, g.beta2))
    buf_ir, buf_vis = ReplayBuffer(g.pool_size), ReplayBuffer(g.pool_size)
    data = UnalignedImages(np.asarray(split.images[~split.is_ir]), np.asarray(split.images[split.is_ir]), tuple(split.images.shape[1:3]),
                           g.crop_scale)
    loader = torch.utils.data.DataLoader(data, batch_size=g.batch_size, shuffle=True, num_workers=workers, drop_last=True)
    done, t0 = 0, None
    while done < warmup + steps:
        for vis, ir in loader:
            if done == warmup:
                t0 = time.perf_counter()
            vis, ir = vis.to(device), ir.to(device)
            shape = model.d_ir(ir[:1]).shape[1:]
            valid = torch.ones((vis.shape[0], *shape), device=device)
            fake = torch.zeros((vis.shape[0], *shape), device=device)
            opt_g.zero_grad()
            loss_id = (l1(model.g_ir2vis(vis), vis) + l1(model.g_vis2ir(ir), ir)) / 2
            fake_ir, fake_vis = model.g_vis2ir(vis), model.g_ir2vis(ir)
            loss_gan = (mse(model.d_ir(fake_ir), valid) + mse(model.d_vis(fake_vis), valid)) / 2
            loss_cycle = (l1(model.g_ir2vis(fake_ir), vis) + l1(model.g_vis2ir(fake_vis), ir)) / 2
            (loss_gan + g.lambda_cycle * loss_cycle + g.lambda_identity * loss_id).backward()
            opt_g.step()
            for d, opt, real, generated, buf in ((model.d_vis, opt_d_vis, vis, fake_vis, buf_vis), (model.d_ir, opt_d_ir, ir, fake_ir, buf_ir)):
                opt.zero_grad()
                loss_d = (mse(d(real), valid) + mse(d(buf.push_and_pop(generated).detach()), fake)) / 2
                loss_d.backward()
                opt.step()
            done += 1
            if done == warmup + steps:
                break
    return (time.perf_counter() - t0) / steps


def run_ours(cfg, split, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step of :func:`train_gan`, from two runs of ``warmup`` and ``warmup + steps`` steps."""
    seconds = []
    for n in (warmup, warmup + steps):
        run = load_config(cfg.profile, overrides={"gan": {"pretrained": "none", "epochs": 1, "decay_start_epoch": 0, "steps_per_epoch": n,
                                                          "select_by": "last", "monitor_every": 0, "image_every": 0}})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train_gan(run, split, Path(tmp) / "gan", device, dataset="demo")
            seconds.append(time.perf_counter() - t0)
    return (seconds[1] - seconds[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"])
    parser.add_argument("--data-root", type=Path, default=None, help="demo dataset folder (default: data/demo-v<version>, made if absent)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="reference DataLoader workers (PyTorch-GAN: --n_cpu 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_config(args.profile, overrides={"gan": {"pretrained": "none"}})
    split = load_splits(cfg, "demo", args.data_root, with_test=False).train
    g = cfg.gan
    images = 2 * g.batch_size
    print(f"DSGAN {args.profile} profile (width {g.base_width}, layers {list(g.encoder_layers)}, discriminators {list(g.disc_widths)}), "
          f"batch {g.batch_size} + {g.batch_size} at {cfg.data.height}x{cfg.data.width}, {device}, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps")
    reference = run_reference(cfg, split, device, args.warmup, args.steps, args.workers)
    print(f"reference (PyTorch-GAN style): {reference:.3f} s/step, {images / reference:.1f} img/s")
    ours = run_ours(cfg, split, device, args.warmup, args.steps)
    print(f"ours (train_gan):              {ours:.3f} s/step, {images / ours:.1f} img/s")
    print(f"GAN step speedup: {reference / ours:.2f}x")


if __name__ == "__main__":
    main()
