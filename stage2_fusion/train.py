"""Stage 2 training: a re-ID method on real images (and their generated partners).

The loop, top to bottom (torchvision classification reference shape):

1. identity sampler -> P x K visible + P x K infrared indices;
2. slice the uint8 training arrays (and the pair cache) -> device;
3. batched augmentation on the device (image and partner jointly) -> model -> loss dict;
4. SGD step (Nesterov, heads at ``lr``, backbone at ``lr * backbone_lr_mult``);
5. per epoch: learning rate schedule (linear warm-up, step decay at milestones),
   TensorBoard + metrics.jsonl, ``last.pt`` (atomic), evaluation every ``eval_every``
   epochs on trial 0 with ``best.pt`` on a new best Rank-1; ``reid.pt`` at the end.

Each epoch is seeded from (seed, epoch), so a resumed run reaches the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.array_cache import ArraySplit
from common.augment import ReidTrainAugment, to_float_images
from common.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from common.config import Config, config_section_dict, digest
from common.errors import UserError
from common.runlog import RunLog, info, progress_bar
from common.runtime import autocast, epoch_seed, seed_everything
from common.samplers import IdentitySampler
from stage2_fusion.evaluate import PartnerSource
from stage2_fusion.methods import build_method

FINAL_NAME = "reid.pt"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
LOG_EVERY = 10

Evaluator = Callable[[torch.nn.Module], dict[str, Any]]


def lr_factor(epoch: int, warmup_epochs: int, milestones: tuple[int, ...], gamma: float) -> float:
    """Learning-rate multiplier of an epoch (0-based).

    Linear warm-up (epoch + 1) / warmup_epochs for epoch < warmup_epochs (AGW train.py
    ``adjust_learning_rate``), times gamma ** (number of milestones <= epoch).
    """
    warm = (epoch + 1) / warmup_epochs if epoch < warmup_epochs else 1.0
    return warm * gamma ** sum(epoch >= m for m in milestones)


def fusion_stage_key(cfg: Config, method: str, data_fingerprint: str, partner_id: str | None) -> str:
    """Identity of a stage-2 training: method, its recipe, model settings, data, partners."""
    f = cfg.fusion
    return digest({
        "method": method, "recipe": config_section_dict(f.recipe(method)), "backbone": config_section_dict(f.backbone),
        "heads": [f.embed_dim, f.num_stripes, f.num_aux_stripes], "seed": f.seed,
        "size": [cfg.data.height, cfg.data.width], "data": data_fingerprint, "partners": partner_id,
    })


def _param_groups(model: torch.nn.Module, lr: float, backbone_mult: float) -> list[dict]:
    head_ids = {id(p) for m in model.head_modules() for p in m.parameters()}
    heads = [p for p in model.parameters() if id(p) in head_ids and p.requires_grad]
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return [{"params": body, "lr": lr * backbone_mult, "base_lr": lr * backbone_mult},
            {"params": heads, "lr": lr, "base_lr": lr}]


def build_for_training(cfg: Config, method: str, num_classes: int, device: torch.device):
    """Model, loss function, optimiser and recipe, freshly initialised with the config seed."""
    recipe = cfg.fusion.recipe(method)
    seed_everything(cfg.fusion.seed)
    model, loss_fn = build_method(method, cfg, num_classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, recipe.lr, recipe.backbone_lr_mult), lr=recipe.lr,
                                momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    return model, loss_fn, optimizer, recipe


def train_fusion(
    cfg: Config,
    method: str,
    train: ArraySplit,
    out_dir: Path,
    device: torch.device,
    *,
    partners: PartnerSource | None = None,
    partner_id: str | None = None,
    evaluate: Evaluator | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Train method ``method`` on a training split; resume or skip as ``out_dir`` allows.

    Args:
        cfg: resolved config (``cfg.fusion``, its recipe for ``method``, ``cfg.data``).
        method: "agw" or "tsme".
        train: decoded training split.
        out_dir: stage folder (``<run>/fusion``): ``last.pt``, ``best.pt``, ``reid.pt``.
        device: training device.
        partners: generated partners of training images (pair cache or on the fly);
            required when the method needs them.
        partner_id: identity of the partner source (cache manifest digest), part of the
            stage key so that new partners retrain.
        evaluate: ``evaluate(model) -> metrics`` (percent, with "rank1"), run every
            ``eval_every`` epochs; None skips evaluation during training.
        meta: extra entries stored in ``reid.pt`` (dataset, GAN checkpoint for test-time
            translation, ...).

    Returns:
        Path of ``reid.pt``.

    Raises:
        UserError: missing partners; an existing checkpoint of other settings in ``out_dir``.
    """
    out_dir = Path(out_dir)
    final, last, best = out_dir / FINAL_NAME, out_dir / LAST_NAME, out_dir / BEST_NAME
    key = fusion_stage_key(cfg, method, train.fingerprint, partner_id)
    if final.exists():
        done = load_checkpoint(final, "reid")
        if done.get("stage_key") == key:
            info(f"stage 2 ({method}): {final} is complete and current, skipped")
            return final
        raise UserError(f"{final} was trained with other settings, data or partners; use another --run-dir or delete {out_dir}")

    recipe = cfg.fusion.recipe(method)
    sampler = IdentitySampler(train.pids, train.is_ir, recipe.ids_per_batch, recipe.images_per_id,
                              replace=recipe.sample_with_replacement, steps_per_epoch=recipe.steps_per_epoch)
    model, loss_fn, optimizer, _ = build_for_training(cfg, method, sampler.num_classes, device)
    if model.needs_partners and partners is None:
        raise UserError(f"method {method} trains on generated partners: pass --pairs CACHE (from pipeline generate-pairs)")
    augment = ReidTrainAugment((cfg.data.height, cfg.data.width), recipe.pad, recipe.flip_p, recipe.erasing_p, recipe.channel_aug,
                               recipe.gray_mix_p)
    use_fp16 = cfg.fusion.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=use_fp16)
    start_epoch, best_rank1 = 0, -1.0
    if last.exists():
        state = load_checkpoint(last, "reid", map_location=device)
        if state.get("stage_key") != key:
            raise UserError(f"{last} belongs to a run with other settings, data or partners; use another --run-dir or delete {out_dir}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_rank1 = state["epoch"], state["best_rank1"]
        info(f"stage 2 ({method}): resuming from {last} after epoch {start_epoch}")

    checkpoint_meta = {
        "stage_key": key, "method": method, "num_classes": sampler.num_classes,
        "class_pids": sampler.class_pids.tolist(), "config": config_section_dict(cfg),
        "image_size": [cfg.data.height, cfg.data.width], "data_fingerprint": train.fingerprint, **(meta or {}),
    }
    batch_images = 2 * recipe.ids_per_batch * recipe.images_per_id * (2 if model.needs_partners else 1)
    total = (recipe.epochs - start_epoch) * len(sampler) * batch_images
    with RunLog(out_dir.parent, "fusion") as log, progress_bar(total, f"stage 2 {method}", unit="img") as advance:
        for epoch in range(start_epoch, recipe.epochs):
            factor = lr_factor(epoch, recipe.warmup_epochs, recipe.milestones, recipe.gamma)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            seed = epoch_seed(cfg.fusion.seed, epoch)
            torch.manual_seed(seed)
            model.train()
            sums: dict[str, torch.Tensor] = {}
            t0 = time.perf_counter()
            for step, batch in enumerate(sampler.epoch(seed)):
                idx = np.concatenate([batch.vis, batch.ir])
                labels = torch.from_numpy(np.concatenate([batch.labels, batch.labels])).to(device)
                is_ir = torch.cat([torch.zeros(len(batch.vis), dtype=torch.bool), torch.ones(len(batch.ir), dtype=torch.bool)]).to(device)
                images_u8 = torch.from_numpy(_gather(train.images, idx))
                x = to_float_images(images_u8, device)
                p = None
                if model.needs_partners:
                    p = to_float_images(partners(idx, images_u8, is_ir.cpu()), device)
                x, p = augment(x, p, is_visible=~is_ir)
                n_vis = len(batch.vis)
                inputs = {"vis": x[:n_vis], "ir": x[n_vis:]}
                pair = None if p is None else {"vis": p[:n_vis], "ir": p[n_vis:]}
                with autocast(device, cfg.fusion.amp):
                    outputs = model(inputs, pair)
                losses = loss_fn(outputs, labels, is_ir, recipe)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
                scaler.step(optimizer)
                scaler.update()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
                if (step + 1) % LOG_EVERY == 0:
                    mean = {k: (v / (step + 1)).item() for k, v in sums.items()}  # sync every LOG_EVERY steps
                    advance(0, postfix=f"epoch {epoch + 1}/{recipe.epochs} loss {mean['total']:.3f} acc {mean['acc']:.2f}")
                advance(batch_images)
            steps = len(sampler)
            if not torch.isfinite(sums["total"]):
                raise UserError(f"stage 2 ({method}): the loss became NaN/inf in epoch {epoch + 1}; lower the learning rate in the recipe")
            record = {f"loss_{k}" if k != "acc" else "train_acc": (v / steps).item() for k, v in sums.items()}
            record.update({"lr": optimizer.param_groups[1]["lr"], "images_per_s": steps * batch_images / (time.perf_counter() - t0)})
            if evaluate is not None and recipe.eval_every and ((epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs):
                metrics = evaluate(model)
                record.update({f"eval_{k}": metrics[k]["mean"] for k in ("rank1", "mean_ap", "minp")})
                if metrics["rank1"]["mean"] > best_rank1:
                    best_rank1 = metrics["rank1"]["mean"]
                    save_checkpoint(best, "reid", {**checkpoint_meta, "epoch": epoch + 1, "model": model.state_dict(), "best_rank1": best_rank1})
            log.scalars(epoch + 1, record, epoch=epoch + 1, method=method)
            save_checkpoint(last, "reid", {
                **checkpoint_meta, "epoch": epoch + 1, "best_rank1": best_rank1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": capture_rng_state(),
            })
    save_checkpoint(final, "reid", {**checkpoint_meta, "epoch": recipe.epochs, "model": model.state_dict(), "best_rank1": best_rank1})
    info(f"stage 2 ({method}): wrote {final}")
    return final


def _gather(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of a (memory-mapped) uint8 array, read in file order then put back in order."""
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *images.shape[1:]), dtype=images.dtype)
    out[order] = images[idx[order]]
    return out
