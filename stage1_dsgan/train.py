"""Stage 1 training: the DSGAN, unpaired, visible-gray <-> infrared.

One step (CycleGAN order, Zhu et al. 2017; PyTorch-GAN cyclegan.py):

1. draw ``batch_size`` visible and ``batch_size`` infrared training images independently
   (unpaired); augment as PyTorch-GAN's CycleGAN (resize by ``crop_scale`` and random-crop
   back, ``crop_scale = 1`` skips it; horizontal flip p = 0.5); convert to BT.601
   grayscale in [-1, 1];
2. generator step with the discriminators frozen: adversarial + 10 x cycle + 5 x identity;
3. discriminator step on real images and on fakes drawn from a 50-image history pool.

Adam (2e-4, betas 0.5/0.999) for both generators together and both discriminators
together; learning rate constant until ``decay_start_epoch`` then linearly to 0 at
``epochs``. After every epoch the generators are scored on held-out images
(:mod:`stage1_dsgan.select`: classifier two-sample test, or PSNR on aligned pairs), and
``gan.pt`` keeps the best epoch's generators (``gan.select_by``; "last" keeps the last).
A checkpoint ``last.pt`` is written atomically after every epoch and every epoch is seeded
from (seed, epoch), so a killed run resumes to the same weights.
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
from stage1_dsgan.image_pool import ImagePool
from stage1_dsgan.losses import discriminator_loss, generator_loss
from stage1_dsgan.networks import DSGAN, build_dsgan
from stage1_dsgan.realism import MIN_IMAGES
from stage1_dsgan.select import SelectionSet, held_out_indices, held_out_pairs, score_generators

FINAL_NAME = "gan.pt"
LAST_NAME = "last.pt"
LOG_EVERY = 10


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


def _lr_lambda(epochs: int, decay_start: int):
    span = max(1, epochs - decay_start)
    return lambda epoch: 1.0 - max(0, epoch - decay_start) / span


def _sample_grid(model: DSGAN, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """Rows: visible-gray, generated IR, cycled visible, real IR, generated visible, cycled IR."""
    with torch.no_grad():
        fake_ir = model.g_vis2ir(vis)
        fake_vis = model.g_ir2vis(ir)
        rows = [vis, fake_ir, model.g_ir2vis(fake_ir), ir, fake_vis, model.g_vis2ir(fake_vis)]
    grid = torch.cat([r.float().cpu() for r in rows])
    return make_grid(grid.add(1).div(2).clamp(0, 1), nrow=vis.shape[0])


def train_gan(
    cfg: Config,
    train: ArraySplit,
    out_dir: Path,
    device: torch.device,
    *,
    dataset: str,
    aligned: bool = False,
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

    seed_everything(g.seed)
    model = build_dsgan(g).to(device)
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
        best, history = state["best"], state["history"]
        info(f"stage 1 (DSGAN): resuming from {last} after epoch {start_epoch}")

    steps = g.steps_per_epoch or max(1, max(len(vis_idx), len(ir_idx)) // g.batch_size)
    total_images = (g.epochs - start_epoch) * steps * 2 * g.batch_size
    guard = NonFiniteGuard("stage 1 (DSGAN)", g.max_nonfinite_steps, last)
    model.train()
    with RunLog(out_dir.parent, "gan") as log, progress_bar(total_images, "stage 1 DSGAN", unit="img") as advance:
        for epoch in range(start_epoch, g.epochs):
            seed = epoch_seed(g.seed, epoch)
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            sums = torch.zeros(5, device=device)
            guard.start_epoch()
            t0 = time.perf_counter()
            for step in range(steps):
                global_step = epoch * steps + step
                vis_u8 = torch.from_numpy(train.images[np.sort(rng.choice(vis_idx, g.batch_size))])
                ir_u8 = torch.from_numpy(train.images[np.sort(rng.choice(ir_idx, g.batch_size))])
                vis = to_gan_domain(_flip_random(_resize_crop(to_float_images(vis_u8, device), g.crop_scale)))
                ir = to_gan_domain(_flip_random(_resize_crop(to_float_images(ir_u8, device), g.crop_scale)))

                # generator step, discriminators frozen
                for d in model.discriminators():
                    d.requires_grad_(False)
                with autocast(device, g.amp):
                    fake_ir = model.g_vis2ir(vis)
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
                opt_g.zero_grad(set_to_none=True)
                if not guard.finite(losses["total"], epoch=epoch, step=step):  # NaN/inf: skip the whole step
                    advance(2 * g.batch_size)
                    continue
                scaler.scale(losses["total"]).backward()
                scaler.step(opt_g)

                # discriminator step on real images and pooled fakes
                for d in model.discriminators():
                    d.requires_grad_(True)
                with autocast(device, g.amp):
                    loss_d_ir = discriminator_loss(model.d_ir(ir), model.d_ir(pool_ir.query(fake_ir)))
                    loss_d_vis = discriminator_loss(model.d_vis(vis), model.d_vis(pool_vis.query(fake_vis)))
                opt_d.zero_grad(set_to_none=True)
                d_finite = guard.finite(loss_d_ir, loss_d_vis, epoch=epoch, step=step)
                if d_finite:
                    scaler.scale(loss_d_ir + loss_d_vis).backward()
                    scaler.step(opt_d)
                scaler.update()

                if d_finite:
                    sums += torch.stack([losses["adv"], losses["cycle"], losses["identity"], loss_d_ir, loss_d_vis]).detach().float()
                if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                    n = max(1, step + 1 - guard.skipped_in_epoch)
                    adv, cyc, idt, dir_, dvis = (sums / n).tolist()  # one sync per LOG_EVERY steps
                    advance(0, postfix=f"epoch {epoch + 1}/{g.epochs} step {step + 1}/{steps} cyc {cyc:.3f} adv {adv:.3f}")
                if g.image_every and global_step % g.image_every == 0:
                    log.image_grid("vis_fakeir_cycled__ir_fakevis_cycled", _sample_grid(model, vis[:4], ir[:4]), global_step)
                advance(2 * g.batch_size)

            adv, cyc, idt, dir_, dvis = (sums / max(1, steps - guard.skipped_in_epoch)).tolist()
            elapsed = time.perf_counter() - t0
            record = {"loss_g_adv": adv, "loss_cycle": cyc, "loss_identity": idt, "loss_d_ir": dir_, "loss_d_vis": dvis,
                      "lr": opt_g.param_groups[0]["lr"], "images_per_s": 2 * g.batch_size * steps / elapsed,
                      "nonfinite_steps": guard.skipped_in_epoch}
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
            })
        model.eval()
        # a fixed, unaugmented batch: the loop may not have run at all (resumed after the last epoch)
        fixed_vis = to_gan_domain(to_float_images(torch.from_numpy(train.images[vis_idx[:4]]), device))  # indices ascending
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
    })
    chosen = f"epoch {best['epoch']} of {g.epochs} by {g.select_by}" if "g_vis2ir" in best else f"the last epoch ({g.epochs})"
    info(f"stage 1 (DSGAN): wrote {final} (generators of {chosen})")
    return final
