"""How far does a generated partner bridge the demo's modality gap, measured on raw pixels?

For the demo's test identities, every infrared test image (cameras 3 and 6) is a query and
every visible test image is the gallery, represented three ways:

* ``gray``: its BT.601 grayscale (what ``tsme-gray`` pairs it with),
* ``gan``: the DSGAN's visible -> infrared translation (what ``tsme`` pairs it with),
* ``twin``: its aligned near-infrared twin from ``aligned_nir/`` (the oracle: the same scene
  seen by the infrared camera; an upper bound no generator can pass).

Each image becomes a person-centred 24 x 8 gray thumbnail, mean-centred and L2-normalised;
the nearest gallery thumbnail by cosine gives Rank-1, and the pixel L1 (in [0, 1]) of the
gallery representation against the twin says how close to the infrared scene it is. No
network is trained: this isolates what the partner image carries.

    python benchmarks/partner_gap.py --demo-root data/demo-v3 \\
        --gan checkpoints/ablation-demo/stage1-seed0/gan/gan.pt [--gan ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.demo.writing import aligned_path, read_demo_info  # noqa: E402
from common.datasets.sysu import read_id_list  # noqa: E402
from common.data.images import BT601, read_image, to_grayscale_bt601  # noqa: E402
from stage1_dsgan.evaluate import _translate_all, partner_rank1, partner_thumbnails  # noqa: E402
from stage1_dsgan.generate import load_generators, make_translator  # noqa: E402

VISIBLE_CAMS, INFRARED_CAMS = (1, 2, 4, 5), (3, 6)
LUMA = np.array(BT601, np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-root", type=Path, default=Path("data/demo-v3"))
    parser.add_argument("--gan", type=Path, action="append", default=[], help="gan.pt (repeat for several seeds)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    info = read_demo_info(args.demo_root) or {}
    if info.get("physics") is None:
        print(f"partner_gap: {args.demo_root} is not a demo with aligned twins; run pipeline make-demo", file=sys.stderr)
        return 2
    size = (96, 48)
    test_ids = read_id_list(args.demo_root / "exp" / "test_id.txt")
    vis_paths, ir_paths = [], []
    for pid in test_ids:
        for cam in VISIBLE_CAMS:
            vis_paths += [(p, pid) for p in sorted((args.demo_root / f"cam{cam}" / f"{pid:04d}").glob("*.jpg"))]
        for cam in INFRARED_CAMS:
            ir_paths += [(p, pid) for p in sorted((args.demo_root / f"cam{cam}" / f"{pid:04d}").glob("*.jpg"))]
    vis = np.stack([read_image(p, size) for p, _ in vis_paths])
    twin = np.stack([read_image(aligned_path(args.demo_root, p, info["physics"]), size) for p, _ in vis_paths])
    ir = np.stack([read_image(p, size) for p, _ in ir_paths])
    g_pid = np.array([pid for _, pid in vis_paths])
    q_pid = np.array([pid for _, pid in ir_paths])
    query = partner_thumbnails(ir)

    def row(images: np.ndarray) -> dict[str, float]:
        l1 = float(np.abs(images.astype(np.float32) @ LUMA - twin.astype(np.float32) @ LUMA).mean() / 255.0)
        return {"rank1": partner_rank1(query, q_pid, partner_thumbnails(images), g_pid), "l1_to_twin": l1}

    report = {"queries": len(ir), "gallery": len(vis), "identities": len(test_ids), "chance_rank1": 100.0 / len(test_ids),
              "gray": row(to_grayscale_bt601(vis)), "twin": row(twin), "gan": []}
    device = torch.device("cpu")
    for path in args.gan:
        translate = make_translator(load_generators(path, device), device, amp=False)
        fake = _translate_all(translate, vis, is_ir=False, batch_size=64)
        report["gan"].append({"checkpoint": str(path), **row(fake)})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"demo test split: {report['queries']} infrared queries, {report['gallery']} visible gallery images, "
          f"{report['identities']} identities (chance Rank-1 {report['chance_rank1']:.2f})")
    print(f"{'gallery as':<40} {'raw-pixel Rank-1':>16} {'L1 to twin':>11}")
    for name, r in [("gray (BT.601)", report["gray"])] + [(f"GAN {Path(g['checkpoint']).parent.parent.name}", g) for g in report["gan"]] + \
            [("aligned near-infrared twin (oracle)", report["twin"])]:
        print(f"{name:<40} {r['rank1']:>16.2f} {r['l1_to_twin']:>11.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
