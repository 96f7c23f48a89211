"""Feature extraction throughput: ``ReidExtractor.extract`` (PyTorch) against its exported ONNX
graph under onnxruntime, on the same images.

For each ``--method`` it builds the profile's network (untrained weights: throughput does not
depend on them; TSME with the profile's DSGAN generator for its partners), writes it as a
``reid.pt`` (and ``gan.pt``), exports it with :func:`pipelines.export.export_onnx` (which
verifies it), and times both on ``--images`` random uint8 images already at the model's size
(so no decoding: both start from the same pixels), in batches of ``--batch-size``, visible
modality, best of ``--repeats``:

* extract: ``extractor.extract(uint8 (N, H, W, 3), "visible")``: uint8 -> float, the graph;
* onnxruntime: per batch, ``(uint8.transpose(0, 3, 1, 2) / 255).astype(float32)`` then
  ``session.run`` (CPUExecutionProvider; CUDAExecutionProvider when ``--device cuda`` and
  the installed onnxruntime has it).

Both use ``--threads`` threads (default: PyTorch's default). It prints, per method, the two
rates in images/s, their ratio (onnxruntime / extract) and the largest feature difference;
the last line is that ratio (for several methods, the geometric mean of their ratios).

    python benchmarks/bench_extract.py --profile demo --method agw,tsme,mso,mscmnet,glmn
    python benchmarks/bench_extract.py --profile paper --method tsme --device cuda --images 512
"""

from __future__ import annotations

import argparse
import statistics
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

from common.checkpoint import file_sha256, save_checkpoint
from common.config import config_section_dict, for_inference, for_method
from stage2_fusion.methods import load_config
from common.runtime import resolve_device, seed_everything

NO_IMAGENET = {"gan": {"pretrained": "none"}, "fusion": {"backbone": {"pretrained": "none"}}}
NUM_CLASSES = 32


def write_checkpoints(profile: str, method: str, folder: Path) -> Path:
    """The profile's ``method`` network (and TSME's generator), untrained, as checkpoints in ``folder``."""
    from stage1_dsgan.networks import build_dsgan
    from pipelines.partners import PartnerKind, PartnerSource
    from stage2_fusion.methods import METHODS, build_method

    cfg = for_method(load_config(profile, overrides=NO_IMAGENET), method)
    h, w = cfg.data.height, cfg.data.width
    seed_everything(0)
    model, _ = build_method(method, for_inference(cfg), NUM_CLASSES)
    extra = {}
    if METHODS[method].needs_partners:
        gan = build_dsgan(cfg.gan)
        gan_path = folder / "gan" / "gan.pt"
        save_checkpoint(gan_path, "dsgan", {"gan": config_section_dict(cfg.gan), "image_size": [h, w], "config": config_section_dict(cfg),
                                            "g_vis2ir": gan.g_vis2ir.state_dict(), "g_ir2vis": gan.g_ir2vis.state_dict()})
        extra = {"partners": PartnerSource(PartnerKind.ON_THE_FLY, str(gan_path), file_sha256(gan_path)).record()}
    reid = folder / "fusion" / "reid.pt"
    save_checkpoint(reid, "reid", {"method": method, "num_classes": NUM_CLASSES, "config": config_section_dict(cfg),
                                   "image_size": [h, w], "epoch": 0, "model": model.eval().state_dict(), **extra})
    return reid


def best_rate(run, count: int, repeats: int) -> float:
    """Images/s of ``run()`` (which embeds ``count`` images), best of ``repeats`` after a warm-up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def bench_method(method: str, args, device: torch.device) -> float:
    import onnxruntime as ort

    from pipelines.export import export_onnx
    from pipelines.inference import ReidExtractor

    with tempfile.TemporaryDirectory() as tmp:
        reid = write_checkpoints(args.profile, method, Path(tmp))
        cpu_extractor = ReidExtractor(reid, "cpu", batch_size=args.batch_size, flip=False)
        t0 = time.perf_counter()
        graphs = export_onnx(cpu_extractor, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t0
        extractor = cpu_extractor if device.type == "cpu" else ReidExtractor(reid, device, batch_size=args.batch_size, flip=False)
        h, w = extractor.image_size
        images = np.random.default_rng(0).integers(0, 256, size=(args.images, h, w, 3), dtype=np.uint8)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(graphs[0]["path"], options, providers=providers)

        def run_onnx() -> np.ndarray:
            out = []
            for start in range(0, len(images), args.batch_size):
                batch = images[start : start + args.batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
                out.append(session.run(["features"], {"images": batch})[0])
            return np.concatenate(out)

        diff = float(np.abs(run_onnx() - extractor.extract(images, "visible")).max())
        rate_torch = best_rate(lambda: extractor.extract(images, "visible"), len(images), args.repeats)
        rate_onnx = best_rate(run_onnx, len(images), args.repeats)
    ratio = rate_onnx / rate_torch
    print(f"{method:>8} {h}x{w} D={extractor.dim:<5} extract {rate_torch:8.1f} images/s   onnxruntime ({providers[0]}) "
          f"{rate_onnx:8.1f} images/s   ratio {ratio:5.2f}x   max |diff| {diff:.1e}   (export + verify {export_s:.0f} s)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"])
    parser.add_argument("--method", default="agw,tsme,mso,mscmnet,glmn", help="comma-separated methods")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="PyTorch and onnxruntime threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"profile {args.profile}, device {device}, {torch.get_num_threads()} threads, {args.images} images, batch {args.batch_size}, "
          f"best of {args.repeats}; torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    ratios = [bench_method(method, args, device) for method in methods]
    if len(ratios) == 1:
        print(f"onnxruntime / extract: {ratios[0]:.2f}x")
    else:  # one figure for several methods: the geometric mean of their ratios
        print(f"onnxruntime / extract, geometric mean over {len(ratios)} methods: {statistics.geometric_mean(ratios):.2f}x")


if __name__ == "__main__":
    main()
