"""One function per CLI command: each builds the configuration once, makes each check once,
runs its stages (:mod:`pipelines.stages`) and returns what the command prints.

:mod:`pipelines.cli` only parses arguments (typer), calls one of these and prints; tests and
scripts call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.config import Config, config_from_dict, for_method, merge_tables, resolve_table
from common.errors import UserError
from common.runlog import info
from pipelines.data import Splits, load_splits
from pipelines.partners import PartnerKind, PartnerSource, parse_partners_option
from pipelines.results import attach_best_on_test, combine_trials
from pipelines.stages import (best_on_test, check_weights_choice, make_protocol, partner_cache_stage, prepare_config, test_stage,
                              train_gan_stage, train_reid_stage, write_run_config)
from stage2_fusion.methods import METHODS, config_from_checkpoint, method_spec


def build_config(profile: str, config_file: Path | None, overrides: dict[str, Any] | None = None, *, method: str | None = None,
                 edge: str | None = None, edge_mode: str | None = None, vgg16: str | None = None) -> tuple[Config, str]:
    """The run's configuration, built once, and its method (``method`` or the profile's).

    ``edge`` / ``edge_mode`` set the chosen method's recipe keys (its spec says whether it
    takes edge options), ``vgg16`` sets ``fusion.vgg16``.

    Raises:
        UserError: as :func:`common.config.load_config`; an unknown method; edge options for
            a method without them.
    """
    table = resolve_table(profile, config_file, overrides)
    method = method or table.get("fusion", {}).get("method", "")
    spec = method_spec(method)
    extra: dict[str, Any] = {}
    recipe = {k: v for k, v in (("edge", edge), ("edge_mode", edge_mode)) if v is not None}
    if recipe:
        if not spec.takes_edges:
            takers = ", ".join(m for m, s in METHODS.items() if s.takes_edges)
            raise UserError(f"--edge / --edge-mode: edge features are offered for {takers}, not {method}")
        extra = {"fusion": {"recipes": {method: recipe}}}
    if vgg16 is not None:
        extra = merge_tables(extra, {"fusion": {"vgg16": vgg16}})
    return config_from_dict(merge_tables(table, extra), methods=METHODS), method


def default_run_dir(dataset: str, split: int, what: str, profile: str) -> Path:
    """``checkpoints/<dataset>[-t<split>]-<method or stage>-<profile>``."""
    from common.datasets import dataset_spec

    return Path("checkpoints") / f"{dataset_spec(dataset).tag(split)}-{what}-{profile}"


def train_gan_command(cfg: Config, dataset: str, data_root: Path | None, run_dir: Path | None, device: torch.device, *,
                      split: int = 1, cache_dir: Path | None = None) -> Path:
    """``pipeline train-gan``: stage 1 alone; returns ``gan.pt``.

    Raises:
        UserError: bad data, the paper profile without a choice of encoder weights, a run
            directory of another configuration.
    """
    from common.config import require_pretrained_choice
    from common.demo.standin import resolve_standins

    from common.datasets import dataset_spec

    require_pretrained_choice(cfg, gan=True, fusion=False)
    probe_wanted = cfg.gan.monitor_every > 0 and dataset_spec(dataset).aligned_twins is not None  # test identities: the partner probe
    splits = load_splits(cfg, dataset, data_root, cache_dir=cache_dir, with_test=probe_wanted, split=split)
    cfg = resolve_standins(cfg, device, gan=True, fusion=False, vgg16=False)
    run_dir = run_dir or default_run_dir(dataset, split, "gan", cfg.profile)
    write_run_config(cfg, run_dir)
    return train_gan_stage(cfg, splits, run_dir, device)


def generate_pairs_command(checkpoint: Path, dataset: str, out: Path, device: torch.device, *, profile: str = "demo",
                           data_root: Path | None = None, split: int = 1, cache_dir: Path | None = None, shard_size: int = 1024):
    """``pipeline generate-pairs``: the partner cache of a dataset's training split; returns it opened.

    Raises:
        UserError: an unfinished GAN checkpoint, bad data, ``shard_size < 1``.
    """
    from common.checkpoint import load_checkpoint
    from stage2_fusion.methods import load_config

    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: give at least 1")
    state = load_checkpoint(checkpoint, "dsgan")
    if "image_size" not in state:
        raise UserError(f"{checkpoint} is an unfinished GAN training checkpoint; pass the gan.pt that train-gan writes at the end")
    cfg = load_config(profile)
    splits = load_splits(cfg, dataset, data_root, cache_dir=cache_dir, with_test=False, size=tuple(state["image_size"]), split=split)
    return partner_cache_stage(checkpoint, splits, out, device, shard_size=shard_size)


def train_reid_command(cfg: Config, method: str, dataset: str, data_root: Path | None, run_dir: Path | None, device_name: str, *,
                       partners: str | None = None, gan_checkpoint: Path | None = None, split: int = 1, cache_dir: Path | None = None,
                       resume: bool = True, workers: int = 0, compile_model: bool = False, sync_bn: bool = False) -> Path | None:
    """``pipeline train-fusion``: stage 2 alone (re-ID training of ``method``), from a partner
    cache, a generator on the fly or gray partners when the method needs them. Under
    ``torchrun`` rank 0 decodes the data and builds the stand-ins first; every rank trains.

    Returns:
        ``reid.pt`` (rank 0), None on the other ranks.

    Raises:
        UserError: a method that needs partners without ``partners``; a stale or foreign
            partner cache; a killed run with ``resume=False``; as :func:`train_reid_stage`.
    """
    from common.data.partner_cache import open_partner_cache
    from common.runtime import init_distributed
    from stage2_fusion.train import TrainOptions

    spec = method_spec(method)
    kind, cache_folder = parse_partners_option(partners, gan_checkpoint)
    if spec.needs_partners and kind is None:
        raise UserError(f"method {method} trains on partners: pass --partners CACHE (make one with pipeline generate-pairs), "
                        "--partners on-the-fly --gan-checkpoint GAN.pt, or --partners gray")
    check_weights_choice(cfg, method, stage1=False)  # stage 1 is not trained here
    dist, device = init_distributed(device_name)
    run_dir = run_dir or default_run_dir(dataset, split, method, cfg.profile)
    if not resume and (Path(run_dir) / "fusion" / "last.pt").exists():
        raise UserError(f"{Path(run_dir) / 'fusion'} holds a killed run; drop --no-resume to continue it or pass another --run-dir")
    splits = run_cfg = None
    if dist.is_main:  # rank 0 decodes the data and builds the stand-ins once, before the other ranks read them
        splits = load_splits(for_method(cfg, method), dataset, data_root, cache_dir=cache_dir, split=split)  # bad data fails first
        run_cfg = prepare_config(cfg, method, device, stage1=False)
        write_run_config(run_cfg, run_dir)
    dist.barrier()
    if run_cfg is None:  # the other ranks find the files rank 0 made
        run_cfg = prepare_config(cfg, method, device, stage1=False)
        splits = load_splits(run_cfg, dataset, data_root, cache_dir=cache_dir, split=split)
    source = cache = None
    if spec.needs_partners:
        if kind is PartnerKind.CACHE:
            cache = open_partner_cache(cache_folder, dataset=splits.index.name, data_fingerprint=splits.train.fingerprint,
                                    image_size=(run_cfg.data.height, run_cfg.data.width), count=len(splits.train))
            source = PartnerSource.from_cache(cache)
        elif kind is PartnerKind.ON_THE_FLY:
            source = PartnerSource.on_the_fly(gan_checkpoint)
        else:
            source = PartnerSource.gray()
        info(f"stage 2 ({method}): {source.describe()}")
    options = TrainOptions(workers=workers, compile=compile_model, sync_bn=sync_bn, dist=dist)
    path = train_reid_stage(run_cfg, method, splits, source, run_dir, device, cache=cache, options=options)
    return path if dist.is_main else None


def _checkpoint_split(ckpt: Path, state: dict[str, Any], splits_wanted: list[int] | None, i: int, several: bool) -> int:
    """The split a checkpoint is tested on: the one given (checked against the recorded one),
    or the recorded one (``split``, or the older ``regdb_trial``), for a dataset of several splits."""
    if not several:
        return 1
    recorded = state.get("split", state.get("regdb_trial"))
    split = splits_wanted[i] if splits_wanted else recorded
    if split is None:
        raise UserError(f"{ckpt} does not record its split; pass --split N, the split it was trained on")
    if recorded is not None and recorded != split:
        raise UserError(f"{ckpt} was trained on split {recorded}; split {split}'s test identities include its training identities: "
                        f"pass --split {recorded}")
    return split


def test_command(checkpoints: list[Path], dataset: str, device: torch.device, *, data_root: Path | None = None,
                 splits_wanted: list[int] | None = None, mode: str | None = None, shots: int | None = None, trials: int | None = None,
                 direction: str | None = None, protocol: str | None = None, perm_file: Path | None = None, feature: str | None = None,
                 flip: bool = False, gan_checkpoint: Path | None = None, untrained: bool = False, rerank: dict[str, float] | None = None,
                 cache_dir: Path | None = None) -> dict[str, Any]:
    """``pipeline test``: one checkpoint with a dataset's protocol, or for a dataset of several
    splits (RegDB) one checkpoint per split, pooled; ``best.pt`` beside every ``reid.pt`` too.

    Returns:
        The results dict (with ``best_on_test`` when there is a ``best.pt`` beside every checkpoint).

    Raises:
        UserError: a dataset without a test; checkpoints and splits that do not pair up; a
            checkpoint tested on another split than its own; as :func:`test_stage`.
    """
    from common.checkpoint import load_checkpoint
    from common.config import test_feature
    from common.datasets import dataset_spec, reid_datasets

    spec = dataset_spec(dataset)
    if not spec.has_test:
        raise UserError(f"--dataset {dataset} has no re-ID test protocol; use one of: {', '.join(reid_datasets())}")
    several = spec.splits > 1
    if several and splits_wanted and len(splits_wanted) != len(checkpoints):
        raise UserError(f"{spec.title} tests one model per split: got {len(checkpoints)} --checkpoint and {len(splits_wanted)} --split; "
                        "pass one --split per --checkpoint")
    if not several and len(checkpoints) != 1:
        raise UserError(f"--dataset {dataset} tests one --checkpoint at a time (several are for a dataset of several splits)")
    results, bests = [], []
    for i, ckpt in enumerate(checkpoints):
        state = load_checkpoint(ckpt, "reid")
        split = _checkpoint_split(ckpt, state, splits_wanted, i, several)
        cfg = config_from_checkpoint(state["config"])
        method = state["method"]
        splits = load_splits(cfg, dataset, data_root, cache_dir=cache_dir, size=tuple(state["image_size"]), split=split)
        del state
        proto = make_protocol(cfg.eval, spec, splits.index.root, mode=mode, shots=shots, trials=trials, direction=direction,
                              protocol=protocol, perm_file=str(perm_file) if perm_file else None)
        kwargs = dict(feature=feature or test_feature(cfg, method), flip=flip, gan_checkpoint=gan_checkpoint,
                      batch_size=cfg.eval.batch_size, rerank=rerank)
        results.append(test_stage(ckpt, splits, device, proto, untrained=untrained, **kwargs))
        bests.append(None if untrained else best_on_test(ckpt, splits, device, proto, **kwargs))
    result = results[0] if len(results) == 1 else combine_trials(results)
    if all(b is not None for b in bests):  # a best.pt beside every tested reid.pt
        attach_best_on_test(result, bests[0] if len(bests) == 1 else combine_trials(bests))
    return result


def results_tag(result: dict[str, Any]) -> str:
    """The protocol part of a results file name: ``all-1shot`` (SYSU-MM01 protocol) or the
    direction (``v2i``), then ``untrained`` / ``reranked`` when they apply."""
    from common.datasets import dataset_spec
    from common.evaluation.protocols import Family

    sysu = dataset_spec(result["dataset"]).protocol is Family.SYSU_MM01
    parts = (result["mode"] if sysu else result["direction"], f"{result['shots']}shot" if sysu else "",
             "untrained" if result.get("untrained") else "", "reranked" if result.get("reranked") else "")
    return "-".join(str(x) for x in parts if x)


def checkpoint_splits(checkpoint: Path, dataset: str, data_root: Path | None, *, split: int = 1, cache_dir: Path | None = None,
                      with_test: bool = True, kind: str = "reid") -> tuple[Config, Splits, dict[str, Any]]:
    """The config a checkpoint was trained with and the dataset decoded at its image size
    (its recorded split wins over ``split``). Returns (config, splits, the checkpoint's metadata).

    Raises:
        UserError: as :func:`common.checkpoint.load_checkpoint` and :func:`load_splits`; an
            unfinished GAN checkpoint.
    """
    from common.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint, kind)
    if "image_size" not in state:
        raise UserError(f"{checkpoint} is an unfinished GAN training checkpoint; pass the gan.pt that train-gan writes at the end")
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "scaler", "rng", "g_vis2ir", "g_ir2vis", "d_vis", "d_ir")}
    cfg = config_from_checkpoint(state["config"])
    del state
    recorded = meta.get("split", meta.get("regdb_trial"))
    splits = load_splits(cfg, dataset, data_root, cache_dir=cache_dir, with_test=with_test, size=tuple(meta["image_size"]),
                         split=recorded or split)
    return cfg, splits, meta
