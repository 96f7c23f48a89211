"""``pipeline run-all``: the whole job in one run directory, (demo data) -> DSGAN -> partner
cache -> re-ID training -> test, each stage skipped when its output is complete and current
(the stages: :mod:`pipelines.stages`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write_json
from common.config import Config, for_method, test_feature
from common.runlog import info
from pipelines.data import load_splits
from pipelines.partners import PartnerKind, PartnerSource
from pipelines.results import DEFAULT_RERANK, METRIC_KEYS, attach_best_on_test
from pipelines.stages import (PARTNER_CACHE_DIR, best_on_test, check_weights_choice, make_protocol, partner_cache_stage, prepare_config,
                              test_stage, train_gan_stage, train_reid_stage, trains_stage1, write_run_config)
from stage2_fusion.methods import method_spec


def run_all(
    cfg: Config,
    *,
    dataset: str,
    data_root: Path | None,
    run_dir: Path,
    device: torch.device,
    method: str | None = None,
    cache_dir: Path | None = None,
    split: int = 1,
    partners: PartnerKind = PartnerKind.CACHE,
    stage1_dir: Path | None = None,
    extras: bool = True,
) -> dict[str, Any]:
    """The whole pipeline into ``run_dir``; returns (and writes) ``results.json``'s content.

    Args:
        split: which published train/test split (RegDB 1..10: one trained model per split,
            as the papers report).
        partners: where a method that trains on partners gets them: ``CACHE`` (stage 1 +
            partner cache) or ``GRAY`` (the trivial partner, no stage 1: the ``tsme-gray``
            control).
        stage1_dir: where stage 1 and the partner cache live (default ``run_dir``); runs that
            share it share one GAN and one cache (``pipeline ablate`` does, per seed).
        extras: besides the last epoch, also test ``best.pt`` (optimistic), the re-ranked
            figures and the untrained and pretrained-start baselines (``pipeline ablate``
            skips them for seeds after the first).

    Raises:
        UserError: an unknown method or dataset, bad data, the paper profile without a
            choice of ImageNet weights, a run directory of another configuration.
    """
    if partners not in (PartnerKind.CACHE, PartnerKind.GRAY):
        raise ValueError(f"run-all makes a partner cache or trains on gray partners, not {partners}")
    t0 = time.perf_counter()
    method = method or cfg.fusion.method
    spec = method_spec(method)
    stage1 = trains_stage1(method, partners)
    check_weights_choice(cfg, method, stage1=stage1)
    run_dir = Path(run_dir)
    splits = load_splits(for_method(cfg, method), dataset, data_root, cache_dir=cache_dir, split=split)  # bad data fails first
    cfg = prepare_config(cfg, method, device, stage1=stage1)  # input size (MSCMNet: 384 x 192), stand-ins built
    write_run_config(cfg, run_dir)
    info(f"data: {splits.index.name} at {splits.index.root}: {len(splits.train)} training images "
         f"({len(set(splits.train.pids.tolist()))} ids), {len(splits.test)} test images ({len(set(splits.test.pids.tolist()))} ids)")
    source = cache = gan_path = None
    if not spec.needs_partners:
        info(f"stage 1 (DSGAN) and partners: not needed by method {method}, skipped")
    elif partners is PartnerKind.GRAY:
        info(f"stage 1 (DSGAN) and partners: not used, method {method} trains on gray partners (control)")
        source = PartnerSource.gray()
    else:
        stage1_folder = Path(stage1_dir) if stage1_dir is not None else run_dir
        gan_path = train_gan_stage(cfg, splits, stage1_folder, device)
        cache = partner_cache_stage(gan_path, splits, stage1_folder / PARTNER_CACHE_DIR, device)
        source = PartnerSource.from_cache(cache)
    reid = train_reid_stage(cfg, method, splits, source, run_dir, device, cache=cache)
    e = cfg.eval
    protocol = make_protocol(e, splits.spec, splits.index.root)
    test = dict(feature=test_feature(cfg, method), flip=e.flip, batch_size=e.batch_size)
    results = test_stage(reid, splits, device, protocol, **test)
    if extras:
        attach_best_on_test(results, best_on_test(reid, splits, device, protocol, **test))
        reranked = test_stage(reid, splits, device, protocol, **test, rerank=DEFAULT_RERANK)
        results["with_reranking"] = {**{k: reranked[k] for k in METRIC_KEYS}, "params": DEFAULT_RERANK, "trials": reranked["trials"]}
        baseline = test_stage(reid, splits, device, protocol, **test, untrained=True)
        results["untrained_baseline"] = {k: baseline[k] for k in METRIC_KEYS}
        if cfg.fusion.backbone.pretrained.loads:
            start = test_stage(reid, splits, device, protocol, **test, untrained=True, from_start=True)
            results["start_baseline"] = {k: start[k] for k in METRIC_KEYS}
    results["training"] = training_summary(reid, gan_path)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results["run_dir"] = str(run_dir)
    atomic_write_json(run_dir / "results.json", results)
    return results


def training_summary(reid: Path, gan: Path | None) -> dict[str, Any]:
    """How long each stage trained and how well stage 2 fits its identities: optimiser steps of
    stage 1 (``gan``, None without one) and stage 2, and stage 2's per-epoch training accuracy
    (its last value: ``final_train_acc``), from the checkpoints."""
    from common.checkpoint import load_checkpoint

    state = load_checkpoint(reid, "reid")
    curve = state.get("train_curve", [])
    out: dict[str, Any] = {"stage2_optimiser_steps": state.get("optimiser_steps"), "final_train_acc": curve[-1]["train_acc"] if curve else None,
                           "train_curve": curve}
    if gan is not None:
        out["stage1_optimiser_steps"] = load_checkpoint(gan, "dsgan").get("optimiser_steps")
    return out
