"""Stage 1 levers, each measured: train the DSGAN with one change at a time and score it.

For each variant (a name and ``[gan]`` / ``[data]`` overrides on top of a base profile or
config file) this trains the generators (``pipeline train-gan``'s function) into
``<out>/<variant>`` and scores them with ``pipeline eval-gan``'s functions:

* ``--dataset pairs`` (an aligned folder, e.g. RoadScene): L1 / PSNR / SSIM on the held-out
  pairs and the two-sample accuracies, model vs the grayscale baseline;
* a re-ID dataset (e.g. ``demo``): the two-sample accuracies on the training images the GAN
  held out (0.5 = the translations cannot be told from real images).

Prints one row per variant with the wall time of its training; runs are cached in their
folders, so a re-run only scores. The variants are the levers of the stage-1 issue:
output channels, CycleGAN's resize-and-crop, training length, identity weight, width.

    python benchmarks/gan_levers.py --dataset demo --out checkpoints/gan-levers-demo
    python benchmarks/gan_levers.py --dataset pairs --data-root ../shared/data/roadscene \\
        --config benchmarks/roadscene_gan.toml --out checkpoints/gan-levers-roadscene
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import common  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from stage2_fusion.methods import load_config
from pipelines.data import load_splits
from pipelines.stages import train_gan_stage as stage_train_gan
from stage1_dsgan.evaluate import evaluate_gan, evaluate_gan_on_split

# name -> [gan] overrides, applied in order: each variant adds one lever to the previous one
LEVERS = [
    ("tsme-layout", {"out_channels": 3, "crop_scale": 1.0, "select_by": "last"}),
    ("+gray-output", {"out_channels": 1}),
    ("+resize-crop", {"crop_scale": 1.12}),
    ("+select-epoch", {"select_by": "two-sample"}),
    ("+2x-steps", {"epochs": 8, "decay_start_epoch": 4}),
    ("+identity-0.5", {"lambda_identity": 0.5}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--select-by-psnr", action="store_true", help="aligned folders: choose the epoch by held-out PSNR")
    args = parser.parse_args()
    device = torch.device(args.device)
    overrides: dict = {}
    rows = []
    for name, lever in LEVERS:
        lever = dict(lever)
        if args.select_by_psnr and lever.get("select_by") == "two-sample":
            lever["select_by"] = "psnr"
        overrides = {**overrides, **lever}
        cfg = load_config(args.profile, args.config, {"gan": overrides})
        splits = load_splits(cfg, args.dataset, args.data_root, with_test=False)
        t0 = time.perf_counter()
        gan = stage_train_gan(cfg, splits, args.out / name, device)
        seconds = time.perf_counter() - t0
        if args.dataset == "pairs":
            scores = evaluate_gan(gan, splits.index.root, device)
        else:
            scores = evaluate_gan_on_split(gan, splits.train, device)
        (args.out / name / "scores.json").write_text(json.dumps(scores, indent=1))
        rows.append((name, seconds, scores))
        print(f"{name:>16} {seconds:7.0f} s  " + "  ".join(f"{k} {v:.4f}" for k, v in scores["model"].items()), flush=True)
    base = rows[0][2]["baseline"]
    print(f"{'gray baseline':>16} {'':>9}  " + "  ".join(f"{k} {v:.4f}" for k, v in base.items()))


if __name__ == "__main__":
    main()
