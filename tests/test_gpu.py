"""What only a CUDA GPU shows (``pytest -m gpu``; skipped without one; run by
benchmarks/gpu_check.sh): bf16/fp16 autocast training steps of AGW and TSME, MSCMNet in
fp16 with a GradScaler (``fusion.amp_dtype = "fp16"``), kornia
augmentation on the device, batched pair generation on the device, ``--compile``, and
CPU vs CUDA agreement of a fixed model's test features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.augment import ReidTrainAugment, imagenet_normalize, to_float_images
from stage2_fusion.methods import load_config
from pipelines.data import load_splits
from pipelines.stages import partner_cache_stage as stage_generate_pairs, train_gan_stage as stage_train_gan
from stage2_fusion.methods import METHODS, build_method
from stage2_fusion.train import TrainOptions, train_fusion
from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to PyTorch)")]

CUDA = torch.device("cuda") if torch.cuda.is_available() else None
CPU = torch.device("cpu")


def _final_weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_agw_trains_under_autocast_on_cuda(sysu_tree, tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    reid = train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "agw" / "fusion", CUDA)
    weights = _final_weights(reid)
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    records = [line for line in (tmp_path / "agw" / "metrics.jsonl").read_text().splitlines() if '"fusion"' in line]
    assert len(records) == tiny_cfg.fusion.recipe("agw").epochs


def test_mscmnet_trains_in_fp16_with_a_grad_scaler_when_asked(sysu_tree, tmp_path):
    """fusion.amp_dtype = "fp16": MSCMNet's own precision (train.py autocast fp16 + GradScaler);
    the scaler state is saved with the run. The default bf16 needs no scaler (empty state)."""
    for amp_dtype, scaled in (("fp16", True), ("bf16", not torch.cuda.is_bf16_supported())):
        cfg = load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "amp_dtype": amp_dtype}})
        splits = load_splits(cfg, "sysu", sysu_tree, with_test=False)
        out = tmp_path / amp_dtype / "fusion"
        reid = train_fusion(cfg, "mscmnet", splits.train, out, CUDA)
        assert all(torch.isfinite(v.float()).all() for v in _final_weights(reid).values())
        scaler = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["scaler"]
        assert ("scale" in scaler) == scaled, (amp_dtype, scaler)


def test_tsme_with_pairs_generated_on_cuda(sysu_tree, tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg, "sysu", sysu_tree)
    gan = stage_train_gan(tiny_cfg, splits, tmp_path / "run", CUDA)  # GAN under autocast too
    cache = stage_generate_pairs(gan, splits, tmp_path / "pairs", CUDA)  # batched translation on the device
    cpu_cache = stage_generate_pairs(gan, splits, tmp_path / "pairs-cpu", CPU)
    diff = np.abs(cache[np.arange(len(cache))].astype(int) - cpu_cache[np.arange(len(cpu_cache))].astype(int))
    assert np.percentile(diff, 99) <= 3  # bf16 on the GPU vs fp32 on the CPU: a few grey levels at most
    reid = train_fusion(tiny_cfg, "tsme", splits.train, tmp_path / "tsme" / "fusion", CUDA, partner_cache=cache,
                        partner_id="gpu-test")
    assert all(torch.isfinite(v.float()).all() for v in _final_weights(reid).values())


def test_compiled_training_step(sysu_tree, tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    reid = train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "c" / "fusion", CUDA, options=TrainOptions(compile=True))
    assert all(torch.isfinite(v.float()).all() for v in _final_weights(reid).values())


def test_kornia_augmentation_runs_on_the_device_and_keeps_partners_aligned():
    torch.manual_seed(0)
    images = torch.rand(32, 3, 32, 16, device=CUDA)
    partners = images.flip(1) * 0.5
    out, out_p = ReidTrainAugment((32, 16), pad=4, flip_p=0.5, erasing_p=0.0)(images, partners)
    assert out.device.type == "cuda" and out_p.device.type == "cuda"
    mean = torch.tensor((0.485, 0.456, 0.406), device=CUDA).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=CUDA).view(1, 3, 1, 1)
    x, p = out * std + mean, out_p * std + mean
    assert torch.allclose(p, x.flip(1) * 0.5, atol=1e-5)


@pytest.mark.parametrize("method", ["agw", "tsme"])
def test_cpu_and_cuda_features_agree(method):
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    torch.manual_seed(0)
    model, _ = build_method(method, cfg, 5)
    model.eval()
    u8 = torch.randint(0, 256, (6, 32, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    feats = {}
    for device in (CPU, CUDA):
        m = model.to(device)
        x = imagenet_normalize(to_float_images(u8, device))
        partners = {"ir": x.flip(-1)} if METHODS[m.method].needs_partners else None
        feats[device.type] = m.extract({"ir": x}, partners).float().cpu()
    # fp32 on both devices: equal up to kernel rounding
    assert torch.allclose(feats["cpu"], feats["cuda"], atol=1e-4), (feats["cpu"] - feats["cuda"]).abs().max()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        x = imagenet_normalize(to_float_images(u8, CUDA))
        partners = {"ir": x.flip(-1)} if METHODS[model.method].needs_partners else None
        low = model.extract({"ir": x}, partners).float().cpu()
    cosine = (low * feats["cpu"]).sum(dim=1)  # both L2-normalised
    assert (cosine > 0.99).all(), cosine


@pytest.mark.parametrize("mode", ["mso", "magnitude"])
@pytest.mark.parametrize("operator", ["laplace", "sobel", "prewitt"])
def test_edge_maps_on_cuda_under_bf16_are_float32_and_equal_the_cpu_ones(operator, mode):
    from stage2_fusion.edges import edge_map, gray_from_normalized

    torch.manual_seed(0)
    x = torch.randn(4, 3, 288, 144)
    cpu = edge_map(gray_from_normalized(x), operator, mode)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        cuda = edge_map(gray_from_normalized(x.cuda()), operator, mode)
    assert cuda.dtype == torch.float32 and cuda.shape == (4, 1, 72, 36) and not cuda.requires_grad
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5), (cuda.cpu() - cpu).abs().max()
