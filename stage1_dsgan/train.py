"""Stage 1 training: the DSGAN, unpaired, visible-gray <-> infrared.

One step (CycleGAN order, Zhu et al. 2017; PyTorch-GAN cyclegan.py):

1. draw ``batch_size`` visible and ``batch_size`` infrared training images independently
   (unpaired); augment as PyTorch-GAN's CycleGAN (resize by ``crop_scale`` and random-crop
   back, ``crop_scale = 1`` skips it; horizontal flip p = 0.5); convert to BT.601
   grayscale in [-1, 1] (the visible -> infrared generator sees the colour image instead
   with ``gan.input = "rgb"``, an option of ours: :mod:`stage1_dsgan.networks`);
2. generator step with the discriminators frozen: adversarial + 10 x cycle + 5 x identity
   (+ the re-ID losses of identity-aware translation, :mod:`stage1_dsgan.identity`, when
   ``gan.reid_id_weight`` or ``gan.reid_triplet_weight`` is set: the batch is then P
   identities x K images of each modality, and two frozen re-ID networks, trained first on
   the real images, judge the translations);
3. discriminator step on real images and on fakes drawn from a 50-image history pool.

Adam (2e-4, betas 0.5/0.999) for both generators together and both discriminators
together; learning rate constant until ``decay_start_epoch`` then linearly to 0 at
``epochs``. After every epoch the generators are scored on held-out images
(:mod:`stage1_dsgan.select`: classifier two-sample test, or PSNR on aligned pairs), and
``gan.pt`` keeps the best epoch's generators (``gan.select_by``; "last" keeps the last).
A checkpoint ``last.pt`` is written atomically after every epoch and every epoch is seeded
from (seed, epoch), so a killed run resumes to the same weights.

The schedule is counted in optimiser steps: ``epochs`` x ``steps_per_epoch`` (an "epoch" is
a block of steps between checkpoints and learning-rate updates). Every ``gan.monitor_every``
steps, when the run has a :class:`stage1_dsgan.evaluate.PartnerProbe` (identities the GAN
never trains on, with aligned infrared twins: the demo's test identities), the visible ->
infrared generator is scored against the twins (L1, PSNR, SSIM) and by its partners'
raw-pixel Rank-1; the curve goes to TensorBoard, ``metrics.jsonl`` and ``gan.pt``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from common.data.array_cache import ArraySplit
from common.data.augment import to_float_images, to_gan_domain
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import Config, config_section_dict, digest
from common.errors import UserError
from common.guard import NonFiniteGuard
from common.runlog import RunLog, info, progress_bar
from common.runtime import autocast, epoch_seed, seed_everything
from stage1_dsgan.evaluate import PartnerProbe
from stage1_dsgan.identity import REID_LR, REID_WEIGHT_DECAY, ModalityReidNet, cross_triplet, identity_batch, identity_losses
from stage1_dsgan.image_pool import ImagePool
from stage1_dsgan.losses import discriminator_loss, generator_loss
from stage1_dsgan.networks import DSGAN, build_dsgan
from stage1_dsgan.realism import MIN_IMAGES
from stage1_dsgan.select import SelectionSet, held_out_indices, held_out_pairs, score_generators

FINAL_NAME = "gan.pt"
LAST_NAME = "last.pt"
LOG_EVERY = 10
#: Per-step values averaged over an epoch (losses of the generators, the discriminators, the re-ID terms).
SUMMED = ("adv", "cycle", "identity", "d_ir", "d_vis", "reid_ce", "reid_triplet")
#: The re-ID networks' pre-training batch: P identities x K images of one modality.
REID_PRETRAIN_IDS, REID_PRETRAIN_IMAGES = 8, 4


def gan_stage_key(cfg: Config, data_fingerprint: str) -> str:
    """Identity of a GAN training: its config section, image size and training data."""
    return digest({"gan": config_section_dict(cfg.gan), "size": [cfg.data.height, cfg.data.width], "data": data_fingerprint})


def _flip_random(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _resize_crop(x: torch.Tensor, scale: float) -> torch.Tensor:
    """PyTorch-GAN's Resize(scale * size) + RandomCrop(size) on a batch: each image gets its own
    crop offset; (B, 3, H, W) float -> (B, 3, H, W). ``scale == 1`` returns ``x``."""
    if scale <= 1.0:
        return x
    h, w = x.shape[-2:]
    big = torch.nn.functional.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", align_corners=False)
    big = big.clamp(0.0, 1.0)  # (B, 3, H', W') in [0, 1]
    dy = torch.randint(0, big.shape[-2] - h + 1, (x.shape[0],), device=x.device)
    dx = torch.randint(0, big.shape[-1] - w + 1, (x.shape[0],), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return big.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _augment(images_u8: torch.Tensor, device: torch.device, crop_scale: float) -> torch.Tensor:
    """PyTorch-GAN's CycleGAN augmentation of a uint8 (B, H, W, 3) batch: resize-and-crop, flip;
    returns float (B, 3, H, W) in [0, 1]."""
    return _flip_random(_resize_crop(to_float_images(images_u8, device), crop_scale))


def _lr_lambda(epochs: int, decay_start: int):
    span = max(1, epochs - decay_start)
    return lambda epoch: 1.0 - max(0, epoch - decay_start) / span


def _sample_grid(model: DSGAN, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """Rows: visible (as the generator sees it: gray, or colour with ``gan.input = "rgb"``),
    generated IR, cycled visible-gray, real IR, generated visible-gray, cycled IR."""
    with torch.no_grad():
        fake_ir = model.g_vis2ir(vis)
        fake_vis = model.g_ir2vis(ir)
        rows = [vis, fake_ir, model.g_ir2vis(fake_ir), ir, fake_vis, model.g_vis2ir(fake_vis)]
    grid = torch.cat([r.float().cpu() for r in rows])
    return make_grid(grid.add(1).div(2).clamp(0, 1), nrow=vis.shape[0])


def _probe(probe: PartnerProbe, model: DSGAN, device: torch.device, step: int, log: RunLog, epoch: int) -> dict:
    """Score the visible -> infrared generator on the probe's identities; log and return the record."""
    scores = probe.score_generator(model.g_vis2ir, device)
    log.scalars(step, {f"probe_{k}": v for k, v in scores.items()}, epoch=epoch + 1)
    return {"step": step, **scores}


def _rows_by_class(labels: np.ndarray, rows: np.ndarray, classes: int) -> list[np.ndarray]:
    return [rows[labels[rows] == c] for c in range(classes)]


def pretrain_reid(net: ModalityReidNet, images: np.ndarray, rows_by_class: list[np.ndarray], device: torch.device, *,
                  steps: int, seed: int, crop_scale: float, margin: float) -> float:
    """Train one modality's re-ID network on its real training images, then freeze it.

    ``steps`` Adam steps (lr :data:`stage1_dsgan.identity.REID_LR`, weight decay 5e-4) on
    batches of :data:`REID_PRETRAIN_IDS` identities x :data:`REID_PRETRAIN_IMAGES` images,
    augmented as the GAN's images and in its input domain (gray, [-1, 1]); loss =
    cross-entropy + batch-hard triplet (:func:`stage1_dsgan.identity.cross_triplet` of the
    batch against itself). Seeded from ``seed`` alone (a resumed run repeats it exactly).

    Args:
        images: the training split's uint8 (N, H, W, 3) array.
        rows_by_class: per class, the rows of this modality.

    Returns:
        the training accuracy of the frozen network on all its rows (eval mode, unaugmented).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=REID_LR, weight_decay=REID_WEIGHT_DECAY)
    classes = [c for c, rows in enumerate(rows_by_class) if len(rows)]
    ids = min(REID_PRETRAIN_IDS, len(classes))
    net.train()
    for _ in range(steps):
        chosen = rng.choice(classes, ids, replace=False)
        rows = np.concatenate([rng.choice(rows_by_class[c], REID_PRETRAIN_IMAGES) for c in chosen])
        labels = torch.from_numpy(np.repeat(chosen, REID_PRETRAIN_IMAGES)).to(device)
        order = np.argsort(rows, kind="stable")
        x = to_gan_domain(_augment(torch.from_numpy(images[rows[order]]), device, crop_scale))
        feat, logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, labels[order]) + cross_triplet(feat, labels[order], feat, labels[order], margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval().requires_grad_(False)
    correct = total = 0
    with torch.no_grad():
        for c in classes:
            for b in range(0, len(rows_by_class[c]), 256):
                rows = np.sort(rows_by_class[c][b:b + 256])
                logits = net(to_gan_domain(to_float_images(torch.from_numpy(images[rows]), device)))[1]
                correct += int((logits.argmax(1) == c).sum())
                total += len(rows)
    return correct / max(1, total)


def train_gan(
    cfg: Config,
    train: ArraySplit,
    out_dir: Path,
    device: torch.device,
    *,
    dataset: str,
    aligned: bool = False,
    probe: PartnerProbe | None = None,
) -> Path:
    """Train the DSGAN on a training split, resuming or skipping as the run dir allows.

    Args:
        cfg: resolved config (uses ``cfg.gan`` and ``cfg.data``).
        train: the training split (uint8 (N, H, W, 3) with ``is_ir``).
        out_dir: the stage folder (``<run>/gan``); receives ``last.pt``, ``gan.pt``, logs.
        device: training device.
        dataset: dataset name recorded in the checkpoint.
        aligned: ``train`` is an aligned folder's training split (pair i = the visible and
            the infrared row of pid i): the epoch is then chosen on whole pairs held out of
            training (PSNR possible), never on the folder's evaluation pairs.
        probe: identities the GAN does not train on, with aligned twins, scored every
            ``gan.monitor_every`` steps (None: no curve; not part of the stage key, it
            changes nothing that is trained).

    Returns:
        Path of ``gan.pt``.

    Raises:
        UserError: a split without both modalities; an existing checkpoint in ``out_dir``
            made with other settings or data; ``select_by = "psnr"`` without aligned pairs.
    """
    g = cfg.gan
    out_dir = Path(out_dir)
    final, last = out_dir / FINAL_NAME, out_dir / LAST_NAME
    key = gan_stage_key(cfg, train.fingerprint)
    if final.exists():
        done = load_checkpoint(final, "dsgan")
        if done.get("stage_key") == key:
            info(f"stage 1 (DSGAN): {final} is complete and current, skipped")
            return final
        raise UserError(f"{final} was trained with other settings or data; use another --run-dir or delete {out_dir}")

    vis_idx = np.flatnonzero(~train.is_ir)
    ir_idx = np.flatnonzero(train.is_ir)
    if len(vis_idx) == 0 or len(ir_idx) == 0:
        raise UserError("the GAN needs visible and infrared training images; the training split lacks one modality")
    selection = None
    if g.select_by == "psnr" and not aligned:
        raise UserError("gan.select_by = 'psnr' needs aligned pairs (--dataset pairs); use 'two-sample' for this dataset")
    if g.select_by != "last":
        held = held_out_pairs(train.pids, train.is_ir, g.select_images, g.seed) if aligned else \
            held_out_indices(train.is_ir, g.select_images, g.seed)
        keep = np.setdiff1d(np.arange(len(train.is_ir)), held)
        vis_idx, ir_idx = keep[~train.is_ir[keep]], keep[train.is_ir[keep]]
        selection = SelectionSet(np.asarray(train.images[held[~train.is_ir[held]]]), np.asarray(train.images[held[train.is_ir[held]]]), aligned)
        if min(len(selection.vis), len(selection.ir)) < MIN_IMAGES:
            info(f"stage 1 (DSGAN): too few images to hold out for choosing the epoch (fewer than {MIN_IMAGES} per modality); "
                 "gan.pt keeps the last epoch")
            selection, vis_idx, ir_idx = None, np.flatnonzero(~train.is_ir), np.flatnonzero(train.is_ir)

    identity = g.reid_id_weight > 0 or g.reid_triplet_weight > 0
    if identity:  # identity-aware translation: classes of the training identities, rows of each
        class_pids, labels = np.unique(train.pids, return_inverse=True)
        vis_by_class = _rows_by_class(labels, vis_idx, len(class_pids))
        ir_by_class = _rows_by_class(labels, ir_idx, len(class_pids))
        both = [c for c in range(len(class_pids)) if len(vis_by_class[c]) and len(ir_by_class[c])]
        if len(both) < g.reid_ids_per_batch:
            raise UserError(f"gan.reid_ids_per_batch = {g.reid_ids_per_batch}, but only {len(both)} training identities have images of "
                            "both modalities; lower it or set gan.reid_id_weight = gan.reid_triplet_weight = 0")

    seed_everything(g.seed)
    model = build_dsgan(g).to(device).to(memory_format=torch.channels_last)  # oneDNN's faster layout on CPUs
    reid: dict[str, ModalityReidNet] = {}
    if identity:  # one re-ID network per target modality, from the encoders' weights
        for modality in ("ir", "vis"):
            reid[modality] = ModalityReidNet(g.base_width, tuple(g.encoder_layers), len(class_pids)).to(device)
            reid[modality].load_encoder_weights(g.pretrained)
    opt_g = torch.optim.Adam(itertools.chain(*(m.parameters() for m in model.generators())), lr=g.lr, betas=(g.beta1, g.beta2))
    opt_d = torch.optim.Adam(itertools.chain(*(m.parameters() for m in model.discriminators())), lr=g.lr, betas=(g.beta1, g.beta2))
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, _lr_lambda(g.epochs, g.decay_start_epoch))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, _lr_lambda(g.epochs, g.decay_start_epoch))
    use_fp16 = g.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=use_fp16)
    pool_ir, pool_vis = ImagePool(g.pool_size), ImagePool(g.pool_size)
    start_epoch = 0
    best: dict = {"epoch": 0, "score": -float("inf")}  # the selected epoch's generators (CPU state dicts)
    history: list[dict] = []
    curve: list[dict] = []  # the probe's scores every gan.monitor_every steps
    reid_accuracy: dict[str, float] = {}
    if last.exists():
        state = load_checkpoint(last, "dsgan", map_location=device)
        if state.get("stage_key") != key:
            raise UserError(f"{last} belongs to a GAN run with other settings or data; use another --run-dir or delete {out_dir}")
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sched_g.load_state_dict(state["sched_g"])
        sched_d.load_state_dict(state["sched_d"])
        scaler.load_state_dict(state["scaler"])
        pool_ir.load_state_dict(state["pool_ir"], device)
        pool_vis.load_state_dict(state["pool_vis"], device)
        start_epoch = state["epoch"]
        best, history, curve = state["best"], state["history"], state["curve"]
        for modality, net in reid.items():
            net.load_state_dict(state["reid"][modality])
            net.eval().requires_grad_(False)
        reid_accuracy = state["reid_accuracy"]
        info(f"stage 1 (DSGAN): resuming from {last} after epoch {start_epoch}")
    elif identity:
        for i, (modality, by_class) in enumerate((("ir", ir_by_class), ("vis", vis_by_class))):
            reid_accuracy[modality] = pretrain_reid(reid[modality], train.images, by_class, device, steps=g.reid_pretrain_steps,
                                                    seed=epoch_seed(g.seed, 1000 + i), crop_scale=g.crop_scale, margin=g.reid_margin)
            info(f"stage 1 (DSGAN): re-ID network of the {'infrared' if modality == 'ir' else 'visible-gray'} images trained on the real "
                 f"ones ({g.reid_pretrain_steps} steps), training accuracy {100 * reid_accuracy[modality]:.1f} %, now frozen")

    steps = g.steps_per_epoch or max(1, max(len(vis_idx), len(ir_idx)) // g.batch_size)
    total_images = (g.epochs - start_epoch) * steps * 2 * g.batch_size
    guard = NonFiniteGuard("stage 1 (DSGAN)", g.max_nonfinite_steps, last)
    model.train()
    with RunLog(out_dir.parent, "gan") as log, progress_bar(total_images, "stage 1 DSGAN", unit="img") as advance:
        if probe is not None and g.monitor_every and not curve:  # the curve starts at the initial generators
            curve.append(_probe(probe, model, device, 0, log, -1))
        for epoch in range(start_epoch, g.epochs):
            seed = epoch_seed(g.seed, epoch)
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            sums = torch.zeros(len(SUMMED), device=device)
            guard.start_epoch()
            t0 = time.perf_counter()
            for step in range(steps):
                global_step = epoch * steps + step
                if identity:  # P identities x K images of each modality
                    vis_rows, ir_rows, classes = identity_batch(rng, [vis_by_class[c] for c in both], [ir_by_class[c] for c in both],
                                                                g.reid_ids_per_batch, g.batch_size // g.reid_ids_per_batch)
                    y = torch.from_numpy(np.asarray(both)[classes]).to(device)  # the same classes in both halves
                    order_v, order_i = np.argsort(vis_rows, kind="stable"), np.argsort(ir_rows, kind="stable")
                    vis_rows, ir_rows, y_vis, y_ir = vis_rows[order_v], ir_rows[order_i], y[order_v], y[order_i]
                else:
                    vis_rows, ir_rows = np.sort(rng.choice(vis_idx, g.batch_size)), np.sort(rng.choice(ir_idx, g.batch_size))
                vis01 = _augment(torch.from_numpy(train.images[vis_rows]), device, g.crop_scale)
                ir = to_gan_domain(_augment(torch.from_numpy(train.images[ir_rows]), device, g.crop_scale))
                vis = to_gan_domain(vis01)  # the visible-gray domain (cycle target, d_vis, g_ir2vis's identity mapping)
                vis_in = vis if g.input == "gray" else model.g_vis2ir.prepare(vis01)  # what g_vis2ir sees
                vis, ir, vis_in = (t.contiguous(memory_format=torch.channels_last) for t in (vis, ir, vis_in))

                # generator step, discriminators frozen
                for d in model.discriminators():
                    d.requires_grad_(False)
                with autocast(device, g.amp, training=True):
                    fake_ir = model.g_vis2ir(vis_in)
                    fake_vis = model.g_ir2vis(ir)
                    losses = generator_loss(
                        d_ir_on_fake_ir=model.d_ir(fake_ir),
                        d_vis_on_fake_vis=model.d_vis(fake_vis),
                        vis=vis, ir=ir,
                        cycled_vis=model.g_ir2vis(fake_ir),
                        cycled_ir=model.g_vis2ir(fake_vis),
                        identity_vis=model.g_ir2vis(vis) if g.lambda_identity > 0 else vis,
                        identity_ir=model.g_vis2ir(ir) if g.lambda_identity > 0 else ir,
                        lambda_cycle=g.lambda_cycle,
                        lambda_identity=g.lambda_identity,
                    )
                    if identity:  # each translation judged by the frozen re-ID network of its target modality
                        to_ir = identity_losses(reid["ir"], fake_ir, y_vis, ir, y_ir, g.reid_margin)
                        to_vis = identity_losses(reid["vis"], fake_vis, y_ir, vis, y_vis, g.reid_margin)
                        losses["reid_ce"] = (to_ir["ce"] + to_vis["ce"]) / 2
                        losses["reid_triplet"] = (to_ir["triplet"] + to_vis["triplet"]) / 2
                        losses["total"] = losses["total"] + g.reid_id_weight * losses["reid_ce"] + g.reid_triplet_weight * losses["reid_triplet"]
                opt_g.zero_grad(set_to_none=True)
                if not guard.finite(losses["total"], epoch=epoch, step=step):  # NaN/inf: skip the whole step
                    advance(2 * g.batch_size)
                    continue
                scaler.scale(losses["total"]).backward()
                scaler.step(opt_g)

                # discriminator step on real images and pooled fakes
                for d in model.discriminators():
                    d.requires_grad_(True)
                with autocast(device, g.amp, training=True):
                    loss_d_ir = discriminator_loss(model.d_ir(ir), model.d_ir(pool_ir.query(fake_ir)))
                    loss_d_vis = discriminator_loss(model.d_vis(vis), model.d_vis(pool_vis.query(fake_vis)))
                opt_d.zero_grad(set_to_none=True)
                d_finite = guard.finite(loss_d_ir, loss_d_vis, epoch=epoch, step=step)
                if d_finite:
                    scaler.scale(loss_d_ir + loss_d_vis).backward()
                    scaler.step(opt_d)
                scaler.update()

                if d_finite:
                    losses.update(d_ir=loss_d_ir, d_vis=loss_d_vis)
                    sums += torch.stack([losses[k] if k in losses else losses["adv"].new_zeros(()) for k in SUMMED]).detach().float()
                if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                    n = max(1, step + 1 - guard.skipped_in_epoch)
                    mean = dict(zip(SUMMED, (sums / n).tolist()))  # one sync per LOG_EVERY steps
                    advance(0, postfix=f"epoch {epoch + 1}/{g.epochs} step {step + 1}/{steps} cyc {mean['cycle']:.3f} adv {mean['adv']:.3f}")
                if g.image_every and global_step % g.image_every == 0:
                    log.image_grid("vis_fakeir_cycled__ir_fakevis_cycled", _sample_grid(model, vis_in[:4], ir[:4]), global_step)
                if probe is not None and g.monitor_every and (global_step + 1) % g.monitor_every == 0:
                    curve.append(_probe(probe, model, device, global_step + 1, log, epoch))
                advance(2 * g.batch_size)

            mean = dict(zip(SUMMED, (sums / max(1, steps - guard.skipped_in_epoch)).tolist()))
            elapsed = time.perf_counter() - t0
            record = {("loss_g_adv" if k == "adv" else f"loss_{k}"): v for k, v in mean.items() if identity or not k.startswith("reid")}
            record.update({"lr": opt_g.param_groups[0]["lr"], "images_per_s": 2 * g.batch_size * steps / elapsed,
                           "nonfinite_steps": guard.skipped_in_epoch})
            if selection is not None:  # score this epoch's generators on the held-out images
                scores = score_generators(model.g_vis2ir, model.g_ir2vis, selection, g.select_by, device, seed=g.seed)
                record.update({f"select_{k}": v for k, v in scores.items()})
                history.append({"epoch": epoch + 1, **scores})
                if scores["score"] > best["score"]:
                    best = {"epoch": epoch + 1, "score": scores["score"],
                            "g_vis2ir": {k: v.detach().cpu().clone() for k, v in model.g_vis2ir.state_dict().items()},
                            "g_ir2vis": {k: v.detach().cpu().clone() for k, v in model.g_ir2vis.state_dict().items()}}
            log.scalars((epoch + 1) * steps, record, epoch=epoch + 1)
            sched_g.step()
            sched_d.step()
            save_checkpoint(last, "dsgan", {
                "stage_key": key, "epoch": epoch + 1, "config": config_section_dict(cfg),
                "model": model.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(), "scaler": scaler.state_dict(),
                "pool_ir": pool_ir.state_dict(), "pool_vis": pool_vis.state_dict(), "best": best, "history": history,
                "curve": curve, "reid": {m: net.state_dict() for m, net in reid.items()}, "reid_accuracy": reid_accuracy,
            })
        model.eval()
        # a fixed, unaugmented batch: the loop may not have run at all (resumed after the last epoch)
        fixed_vis = model.g_vis2ir.prepare(to_float_images(torch.from_numpy(train.images[vis_idx[:4]]), device))  # indices ascending
        fixed_ir = to_gan_domain(to_float_images(torch.from_numpy(train.images[ir_idx[:4]]), device))
        log.image_grid("final_vis_fakeir_cycled__ir_fakevis_cycled", _sample_grid(model, fixed_vis, fixed_ir), g.epochs * steps)

    save_checkpoint(final, "dsgan", {
        "stage_key": key,
        "config": config_section_dict(cfg),
        "gan": config_section_dict(g),
        "image_size": [cfg.data.height, cfg.data.width],
        "dataset": dataset,
        "data_fingerprint": train.fingerprint,
        "g_vis2ir": best["g_vis2ir"] if "g_vis2ir" in best else model.g_vis2ir.state_dict(),
        "g_ir2vis": best["g_ir2vis"] if "g_ir2vis" in best else model.g_ir2vis.state_dict(),
        "selection": {"measure": g.select_by if "g_vis2ir" in best else "last", "epoch": best["epoch"] if "g_vis2ir" in best else g.epochs,
                      "score": best["score"] if "g_vis2ir" in best else None, "history": history,
                      "held_out": f"up to {g.select_images} {'aligned training pairs' if aligned else 'training images per modality'}, "
                                  "not trained on"},
        "d_ir": model.d_ir.state_dict(),
        "d_vis": model.d_vis.state_dict(),
        "optimiser_steps": g.epochs * steps,
        "curve": curve,
        "probe_baselines": probe.baselines() if probe is not None and curve else None,
        "reid_accuracy": reid_accuracy,
    })
    chosen = f"epoch {best['epoch']} of {g.epochs} by {g.select_by}" if "g_vis2ir" in best else f"the last epoch ({g.epochs})"
    info(f"stage 1 (DSGAN): wrote {final} (generators of {chosen})")
    return final
