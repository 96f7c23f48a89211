"""Stage 2 training: a re-ID method on real images (and their generated partners).

The loop, top to bottom (torchvision classification reference shape):

1. identity sampler -> the epoch's batches of P x K visible + P x K infrared indices;
2. DataLoader workers slice the uint8 training arrays (and the partner cache) -> pinned
   tensors -> device (``non_blocking``);
3. partners translated on the device by a frozen generator when training on the fly;
4. batched augmentation on the device (image and partner jointly) -> model -> loss dict;
5. SGD step (Nesterov, heads at ``lr``, backbone at ``lr * backbone_lr_mult``), AMP on CUDA
   (``fusion.amp_dtype``: bf16, or fp16 with a GradScaler), channels_last, optional
   ``torch.compile``;
6. per epoch: learning-rate schedule (linear warm-up, step decay at milestones),
   TensorBoard + metrics.jsonl, ``last.pt`` (atomic), evaluation every ``eval_every``
   epochs with ``best.pt`` on a new best Rank-1; ``reid.pt`` at the end.

Each epoch is seeded from (seed, epoch), so a resumed run reaches the same weights as an
uninterrupted one. Under ``torchrun`` the model is wrapped in DistributedDataParallel, each
rank takes its share of the epoch's batches, and rank 0 alone writes files and logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data.array_cache import ArraySplit
from common.data.augment import common_augment, imagenet_normalize, to_float_images
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import Config, config_section_dict, digest, test_feature
from common.errors import UserError
from common.guard import NonFiniteGuard
from common.data.partner_cache import PartnerCache
from common.runlog import RunLog, info, progress_bar
from common.runtime import DistInfo, amp_plan, autocast, epoch_seed, seed_everything
from common.data.samplers import Batch, IdentitySampler
from stage2_fusion.methods import build_method, build_view_augment, method_spec
from stage2_fusion.optim import build_optimizer, build_scheduler

FINAL_NAME = "reid.pt"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
LOG_EVERY = 10
PROBE_IMAGES = 8  # training images whose eval-mode features the guard checks at the end of each epoch

Evaluator = Callable[[torch.nn.Module], dict[str, Any]]
# translate(images uint8 (B, H, W, 3), is_ir bool (B,)) -> partners uint8 (B, H, W, 3)
Translate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainOptions:  # pragma: no mutate block
    """Run-time switches that do not change what is learned.

    Attributes:
        workers: DataLoader worker processes slicing the arrays (0 = main process).
        compile: wrap the model in ``torch.compile`` for the training step.
        sync_bn: convert BatchNorm to SyncBatchNorm under DistributedDataParallel.
        dist: this process's place in a distributed run.
    """

    workers: int = 0
    compile: bool = False
    sync_bn: bool = False
    dist: DistInfo = field(default_factory=DistInfo)


def fusion_stage_key(cfg: Config, method: str, data_fingerprint: str, partner_id: str | None) -> str:  # pragma: no mutate block
    """Identity of a stage-2 training: method, its recipe (its model keys included), backbone, data, partners."""
    f = cfg.fusion
    return digest({
        "method": method, "recipe": config_section_dict(f.recipe(method)), "backbone": config_section_dict(f.backbone), "seed": f.seed,
        "size": [cfg.data.height, cfg.data.width], "data": data_fingerprint, "partners": partner_id,
    })


def build_for_training(cfg: Config, method: str, num_classes: int, device: torch.device):
    """Model, loss function, optimiser, LR scheduler and recipe, initialised with the config seed.

    The optimiser and schedule are :mod:`stage2_fusion.optim`'s (group 0 = body at
    ``lr * backbone_lr_mult``, group 1 = heads at ``lr``).
    """
    recipe = cfg.fusion.recipe(method)
    seed_everything(cfg.fusion.seed)
    model, loss_fn = build_method(method, cfg, num_classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe)
    return model, loss_fn, optimizer, scheduler, recipe


def build_sampler(recipe, train: ArraySplit, dist: DistInfo = DistInfo()) -> IdentitySampler:
    """The recipe's identity sampler over a training split (P x K per modality, with or
    without replacement as the recipe says: AGW with, TSME without)."""
    return IdentitySampler(train.pids, train.is_ir, recipe.ids_per_batch, recipe.images_per_id,
                           replace=recipe.sample_with_replacement, steps_per_epoch=recipe.steps_per_epoch,
                           rank=dist.rank, world_size=dist.world_size)


def restore_training_state(state: dict[str, Any], model, optimizer, scheduler, scaler) -> tuple[int, float]:
    """Load a ``last.pt`` dict into the training objects; returns (epochs done, best Rank-1)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state["epoch"], state["best_rank1"]


def _log_test_features(log: RunLog, extra: dict | None, epoch: int, max_points: int = 1000) -> None:  # pragma: no mutate block
    """TensorBoard at an evaluation: the test features in the embedding projector (coloured
    by identity and modality) and distance histograms of positive vs negative pairs per
    modality pair."""
    if extra is None:
        return
    from stage2_fusion.evaluate import pair_distances

    feats, pids, is_ir = extra["features"], extra["pids"], extra["is_ir"]
    for name, values in pair_distances(feats, pids, is_ir).items():
        log.histogram(f"distance/{name.replace(' ', '_')}", values, epoch)
    keep = np.sort(np.random.default_rng(epoch).choice(len(feats), min(len(feats), max_points), replace=False))
    log.embedding("test_features", feats[keep], [[str(int(p)), "ir" if m else "vis"] for p, m in zip(pids[keep], is_ir[keep])],
                  ["pid", "modality"], epoch)


@torch.no_grad()
def _probe_features(model: torch.nn.Module, probe: tuple[torch.Tensor, torch.Tensor | None] | None, feature: str) -> torch.Tensor | None:  # pragma: no mutate block
    """Eval-mode test features of a few training images (the guard's end-of-epoch probe).

    Args:
        probe: (visible images (b, 3, H, W) float [0, 1], their partners or None), or None
            when the epoch had no batch.
        feature: the method's test feature, "pre" or "post".

    Returns:
        (b, D) float32 features in float32 precision (as tested), or None; the model is left
        in train mode.
    """
    if probe is None:
        return None
    images, partners = probe
    was_training = model.training
    model.eval()
    try:
        pair = None if partners is None else {"vis": imagenet_normalize(partners)}
        return model.extract({"vis": imagenet_normalize(images)}, pair, feature).float()
    finally:
        model.train(was_training)


def gather_rows(images: np.ndarray, idx: np.ndarray) -> np.ndarray:  # pragma: no mutate block
    """Rows ``idx`` of a (memory-mapped) uint8 array, read in file order, returned in ``idx`` order."""
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *images.shape[1:]), dtype=images.dtype)
    out[order] = images[idx[order]]
    return out


class EpochBatches(torch.utils.data.Dataset):  # pragma: no mutate block
    """One epoch's batches; a worker only slices uint8 arrays (CONTRIBUTING.md, "Performance").

    Item i: (images uint8 (2PK, H, W, 3), partners uint8 (2PK, H, W, 3) or an empty
    tensor, labels int64 (2PK,), indices int64 (2PK,)); rows visible first.
    """

    def __init__(self, batches: list[Batch], images: np.ndarray, partner_cache: PartnerCache | None) -> None:
        self.batches, self.images, self.partner_cache = batches, images, partner_cache

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        batch = self.batches[i]
        idx = np.concatenate([batch.vis, batch.ir])
        images = torch.from_numpy(gather_rows(self.images, idx))
        partners = torch.from_numpy(self.partner_cache[idx]) if self.partner_cache is not None else torch.empty(0, dtype=torch.uint8)
        labels = torch.from_numpy(np.concatenate([batch.labels, batch.labels]))
        return images, partners, labels, torch.from_numpy(idx)


def train_fusion(
    cfg: Config,
    method: str,
    train: ArraySplit,
    out_dir: Path,
    device: torch.device,
    *,
    partner_cache: PartnerCache | None = None,
    translate: Translate | None = None,
    partner_id: str | None = None,
    evaluate: Evaluator | None = None,
    meta: dict[str, Any] | None = None,
    options: TrainOptions = TrainOptions(),
) -> Path:  # pragma: no mutate block
    """Train method ``method`` on a training split; resume or skip as ``out_dir`` allows.

    Args:
        cfg: resolved config (``cfg.fusion``, its recipe for ``method``, ``cfg.data``).
        method: a name of :data:`stage2_fusion.methods.METHODS`.
        train: decoded training split.
        out_dir: stage folder (``<run>/fusion``): ``last.pt``, ``best.pt``, ``reid.pt``.
        device: training device.
        partner_cache: generated partners of the training images (``generate-pairs``).
        translate: or a frozen generator translating partners inside the step (on the fly).
        partner_id: identity of the partner source (generator SHA-256 and data), part of the
            stage key so that new partners retrain.
        evaluate: ``evaluate(model) -> metrics`` (percent, with "rank1"), run every
            ``eval_every`` epochs on rank 0; None skips evaluation during training.
        meta: extra entries stored in the checkpoints (dataset, generator for test time).
        options: workers, compile, SyncBN, distributed context.

    Returns:
        Path of ``reid.pt``.

    Raises:
        UserError: missing partners; an existing checkpoint of other settings in ``out_dir``;
            a diverged loss, or weights or BatchNorm statistics that became NaN/inf (checked at
            the end of every epoch, before evaluating or saving).
    """
    dist = options.dist
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
    sampler = build_sampler(recipe, train, dist)
    model, loss_fn, optimizer, scheduler, _ = build_for_training(cfg, method, sampler.num_classes, device)
    needs_partners = method_spec(method).needs_partners
    if needs_partners and partner_cache is None and translate is None:
        raise UserError(f"method {method} trains on partners: pass --partners CACHE (from pipeline generate-pairs), --partners on-the-fly "
                        "or --partners gray")
    augment = common_augment((cfg.data.height, cfg.data.width), recipe)
    view_augment = build_view_augment(method, (cfg.data.height, cfg.data.width), recipe)  # CAJ's views (glmn, caj), MSCMNet's
    _, use_scaler = amp_plan(device, cfg.fusion.amp, cfg.fusion.amp_dtype, training=True)  # fp16 (asked for, or no bf16): loss scaling
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    start_epoch, best_rank1 = 0, -1.0
    train_curve: list[dict[str, float]] = []  # per epoch: training accuracy and loss (what "trained until it fits" is judged by)
    if last.exists():
        state = load_checkpoint(last, "reid", map_location=device)
        if state.get("stage_key") != key:
            raise UserError(f"{last} belongs to a run with other settings, data or partners; use another --run-dir or delete {out_dir}")
        start_epoch, best_rank1 = restore_training_state(state, model, optimizer, scheduler, scaler)
        train_curve = state.get("train_curve", [])
        info(f"stage 2 ({method}): resuming from {last} after epoch {start_epoch}")

    step_model = model
    if dist.enabled:
        if options.sync_bn:
            step_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(step_model)
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    if options.compile:
        step_model = torch.compile(step_model)

    checkpoint_meta = {
        "stage_key": key, "method": method, "num_classes": sampler.num_classes,
        "class_pids": sampler.class_pids.tolist(), "config": config_section_dict(cfg),
        "image_size": [cfg.data.height, cfg.data.width], "data_fingerprint": train.fingerprint, **(meta or {}),
    }
    guard = NonFiniteGuard(f"stage 2 ({method})", cfg.fusion.max_nonfinite_steps, last, distributed=dist.enabled)
    batch_images = 2 * recipe.ids_per_batch * recipe.images_per_id * (2 if needs_partners else 1)
    total = (recipe.epochs - start_epoch) * len(sampler) * batch_images
    pin = device.type == "cuda"
    with RunLog(out_dir.parent, "fusion", enabled=dist.is_main) as log, \
            progress_bar(total, f"stage 2 {method}", unit="img", enabled=dist.is_main) as advance:
        for epoch in range(start_epoch, recipe.epochs):
            seed = epoch_seed(cfg.fusion.seed, epoch)
            torch.manual_seed(seed + dist.rank)  # augmentation differs across ranks, reproducibly
            step_model.train()
            loader = torch.utils.data.DataLoader(
                EpochBatches(list(sampler.epoch(seed)), train.images, partner_cache if needs_partners else None),
                batch_size=None, shuffle=False, num_workers=options.workers, pin_memory=pin)
            sums: dict[str, torch.Tensor] = {}
            probe = None
            guard.start_epoch()
            t0 = time.perf_counter()
            for step, (images_u8, partners_u8, labels, idx) in enumerate(loader):
                n = labels.shape[0] // 2
                is_ir = torch.arange(2 * n) >= n
                x = to_float_images(images_u8, device)
                p = None
                if needs_partners:
                    if translate is not None:
                        partners_u8 = translate(images_u8, is_ir)  # frozen generator, on the device
                    p = to_float_images(partners_u8, device)
                probe = (x[:min(n, PROBE_IMAGES)], None if p is None else p[:min(n, PROBE_IMAGES)])  # visible images, before augmentation
                if view_augment is not None:  # several views per image (CAJ's layout, MSCMNet's), partners view by view
                    inputs, pair = view_augment(x, is_visible=~is_ir, partners=p)
                else:
                    x, p = augment(x, p, is_visible=~is_ir.to(device))
                    inputs = {"vis": x[:n], "ir": x[n:]}
                    pair = None if p is None else {"vis": p[:n], "ir": p[n:]}
                labels = labels.to(device, non_blocking=True)
                with autocast(device, cfg.fusion.amp, cfg.fusion.amp_dtype, training=True):
                    outputs = step_model(inputs, pair)
                losses = loss_fn(outputs, labels, is_ir.to(device), recipe)
                optimizer.zero_grad(set_to_none=True)
                if not guard.finite(losses["total"], epoch=epoch, step=step):  # NaN/inf: skip, count, maybe abort
                    advance(batch_images)
                    continue
                scaler.scale(losses["total"]).backward()
                scaler.step(optimizer)
                scaler.update()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
                if dist.is_main and (step + 1) % LOG_EVERY == 0 and sums:
                    mean = {k: (v / (step + 1 - guard.skipped_in_epoch)).item() for k, v in sums.items()}  # a sync per LOG_EVERY steps
                    advance(0, postfix=f"epoch {epoch + 1}/{recipe.epochs} step {step + 1}/{len(sampler)} "
                                       f"loss {mean['total']:.3f} acc {mean['acc']:.2f}")
                advance(batch_images)
            # diverged weights, BN statistics or eval-mode features: stop, keeping last.pt of the previous epoch
            guard.check_state(model, epoch=epoch, probe=_probe_features(model, probe, test_feature(cfg, method)))
            steps = len(sampler)
            good = max(1, steps - guard.skipped_in_epoch)
            record = {f"loss_{k}" if k != "acc" else "train_acc": (v / good).item() for k, v in sums.items()}
            record.update({"lr": optimizer.param_groups[1]["lr"], "images_per_s": dist.world_size * steps * batch_images / (time.perf_counter() - t0),
                           "nonfinite_steps": guard.skipped_in_epoch})
            scheduler.step()
            train_curve.append({"epoch": epoch + 1, "train_acc": record.get("train_acc", float("nan")),
                                "loss_total": record.get("loss_total", float("nan"))})
            if dist.is_main and evaluate is not None and recipe.eval_every and (
                    (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs):
                metrics = evaluate(model)
                _log_test_features(log, metrics.pop("features", None), epoch + 1)
                record.update({f"eval_{k}": metrics[k]["mean"] for k in ("rank1", "mean_ap", "minp")})
                if metrics["rank1"]["mean"] > best_rank1:
                    best_rank1 = metrics["rank1"]["mean"]
                    save_checkpoint(best, "reid", {**checkpoint_meta, "epoch": epoch + 1, "model": model.state_dict(), "best_rank1": best_rank1})
            if dist.is_main:
                log.scalars(epoch + 1, record, epoch=epoch + 1, method=method)
                save_checkpoint(last, "reid", {
                    **checkpoint_meta, "epoch": epoch + 1, "best_rank1": best_rank1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "train_curve": train_curve,
                })
            dist.barrier()
    if dist.is_main:
        save_checkpoint(final, "reid", {**checkpoint_meta, "epoch": recipe.epochs, "model": model.state_dict(), "best_rank1": best_rank1,
                                        "optimiser_steps": recipe.epochs * len(sampler), "train_curve": train_curve})
        info(f"stage 2 ({method}): wrote {final}")
    dist.barrier()
    return final
