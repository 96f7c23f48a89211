"""``pipeline``: the command line. Each command parses its arguments, calls one function
(:mod:`pipelines.commands`, :func:`pipelines.run_all.run_all`, :func:`pipelines.ablate.ablate`,
...), prints, and exits.

Renamed flags keep working for one release and print a one-line deprecation: ``--trial``
(the RegDB split; now ``--split``, apart from ``--trials``, the gallery draws) and
``train-fusion --pairs`` (now ``--partners``).

User errors (:class:`common.errors.UserError`) are printed as one line on stderr with exit
status 2 and no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from common.datasets import demo as demo_dataset
from common.datasets import pairs as pairs_dataset
from common.config import PROFILES
from common.errors import UserError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train and test visible-infrared person re-ID: a DSGAN's partners (stage 1), a re-ID method (stage 2: agw, tsme, mso, "
         "mscmnet, glmn), the datasets' protocols; then extract, search, export.\n\nStart with: pipeline run-all",
)


def _names(registry) -> str:
    return " | ".join(registry)


def _method_names() -> str:
    from stage2_fusion.methods import METHODS

    return _names(METHODS)


def _modifier_names() -> str:
    from stage2_fusion.methods import METHODS

    return "; ".join(f"{name}: {', '.join(spec.modifiers) or '(none)'}" for name, spec in METHODS.items())


def _dataset_names(with_test: bool = False) -> str:
    from common.datasets import DATASETS, reid_datasets

    return _names(reid_datasets() if with_test else DATASETS)

#: The dataset run-all and ablate read when none is named: the demo, made on first use.
DEMO = demo_dataset.NAME
#: The dataset eval-gan reads when none is named: an aligned folder pair.
ALIGNED = pairs_dataset.SPEC.name
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]
DeterministicOpt = Annotated[bool, typer.Option("--deterministic", help="PyTorch deterministic algorithms (same command, same weights and metrics)")]
ProfileOpt = Annotated[str, typer.Option("--profile", help=f"shipped settings: {' | '.join(PROFILES)} (demo-full: the demo's longer schedule, the ablation's)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML file overriding the profile (e.g. a run's config.toml)")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help="dataset folder in its original layout")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="run directory (default checkpoints/<dataset>-<method>-<profile>)")]
EdgeOpt = Annotated[Optional[str], typer.Option("--edge", help="MSO edge features at the stems: laplace | sobel | prewitt | none (agw, mso, tsme; default: the recipe's)")]
EdgeModeOpt = Annotated[Optional[str], typer.Option("--edge-mode", help="mso (MSO's signed kernels) | magnitude (kornia's edge magnitude)")]
Vgg16Opt = Annotated[Optional[str], typer.Option("--vgg16", help="VGG16 for MSO's PEF loss: PATH (torchvision's vgg16-397923af.pth) | demo-standin | none (random)")]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="decoded-image cache (default $VIREID_CACHE or ~/.cache/vireid)")]
SplitOpt = Annotated[int, typer.Option("--split", help="which published train/test split (RegDB 1..10; 1 for the others)")]
OldTrialOpt = Annotated[Optional[int], typer.Option("--trial", hidden=True, help="deprecated: --split")]
MethodOpt = Annotated[Optional[str], typer.Option("--method", help=f"{_method_names()} (default: the profile's)")]


def _deprecated(old: str, new: str) -> None:
    """One line on stderr: ``old`` still works this release."""
    from common.runlog import info

    info(f"warning: {old} is deprecated and will be removed in the next release; use {new}")


def _split(split: int, trial: int | None) -> int:
    """``--split``, or the deprecated ``--trial`` (one warning line)."""
    if trial is None:
        return split
    _deprecated("--trial", "--split (the dataset's train/test split; --trials counts gallery draws)")
    return trial


def _config(profile: str, config: Path | None, overrides: dict[str, Any] | None = None):
    from stage2_fusion.methods import load_config

    return load_config(profile, config, overrides)


def _deterministic(enabled: bool) -> None:
    if enabled:
        from common.runtime import set_deterministic

        set_deterministic(True)


def check_edge_choice(checkpoint: Path, recipe, edge: str | None, edge_mode: str | None) -> None:
    """Refuse to test a checkpoint as another edge operator or mode than it was trained with."""
    trained = (getattr(recipe, "edge", "none"), getattr(recipe, "edge_mode", "mso"))
    if edge is not None and edge != trained[0]:
        raise UserError(f"{checkpoint} was trained with edge operator '{trained[0]}', not '{edge}'; test it as {trained[0]} "
                        f"(or train a model with --edge {edge})")
    if edge_mode is not None and trained[0] != "none" and edge_mode != trained[1]:
        raise UserError(f"{checkpoint} was trained with edge mode '{trained[1]}', not '{edge_mode}'; test it as {trained[1]}")


def _print(text: str) -> None:
    typer.echo(text)


@app.command("make-demo")
def make_demo_cmd(
    out: Annotated[Optional[Path], typer.Option("--out", help="folder to create (SYSU-MM01 layout); default data/demo-v<version>")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed; same seed, same bytes")] = 0,
    train_ids: Annotated[Optional[int], typer.Option(help="training identities (default: the demo profile's)")] = None,
    val_ids: Annotated[Optional[int], typer.Option(help="validation identities, trained on as SYSU-MM01's (default: the demo profile's)")] = None,
    test_ids: Annotated[Optional[int], typer.Option(help="test identities (default: the demo profile's)")] = None,
    physics: Annotated[str, typer.Option("--physics", help="infrared cameras: nir (near-infrared, SYSU-MM01/LLCM-like) | thermal (RegDB-like)")] = "nir",
) -> None:
    """Generate the demo dataset: procedural pedestrians seen by visible and near-infrared cameras, in SYSU-MM01's layout.

    Example: pipeline make-demo --out data/demo-peek --train-ids 4 --val-ids 1 --test-ids 4
    """
    from common.datasets.demo import default_demo_root
    from common.demo.identities import PHYSICS
    from common.demo.writing import make_demo

    if physics not in PHYSICS:
        raise UserError(f"--physics {physics} is unknown; use nir or thermal")
    d = _config("demo", None).data
    path = make_demo(out or default_demo_root(), seed, n_train=train_ids or d.demo_train_ids, n_val=val_ids or d.demo_val_ids,
                     n_test=test_ids or d.demo_test_ids, physics=physics)
    _print(f"demo dataset ready: {path}")


@app.command("pretrain")
def pretrain_cmd(
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="where stand-ins live (default $VIREID_CACHE/standin)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Build the demo's ImageNet stand-ins (re-ID body, DSGAN encoder, VGG16 for PEF) once; later runs load them.

    Example: pipeline pretrain
    """
    _deterministic(deterministic)
    from common.checkpoint import file_sha256
    from common.runtime import resolve_device
    from common.demo.standin import ensure_standins

    cfg = _config(profile, config)
    paths = ensure_standins(cfg, resolve_device(device), cache_dir=cache_dir)
    if not paths:
        raise UserError(f"the {profile} profile names no stand-in (no weights key is 'demo-standin'); nothing to build")
    out = {}
    for key, path in paths.items():
        made = json.loads(path.with_suffix(".json").read_text())
        out[key] = {"path": str(path), "sha256": file_sha256(path), "held_out_top1": made["held_out_top1"], "seconds": made["seconds"]}
    if as_json:
        _print(json.dumps(out))
        return
    for key, v in out.items():
        _print(f"{key:<28} {v['path']}  held-out top-1 {100 * v['held_out_top1']:.1f} %  (built in {v['seconds']:.0f} s)")


@app.command("check-data")
def check_data_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names())],
    data_root: Annotated[Path, typer.Option("--data-root", help="dataset folder in its original layout")],
    mode: Annotated[str, typer.Option("--mode", help="SYSU-MM01 search mode for query/gallery: all | indoor")] = "all",
    direction: Annotated[str, typer.Option("--direction", help="RegDB/LLCM: v2i (visible query) | i2v")] = "v2i",
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Check a dataset copy: identities, images and cameras per split and modality.

    Example: pipeline check-data --dataset sysu --data-root /data/SYSU-MM01
    """
    from common.datasets.check import check_dataset, format_check

    summary = check_dataset(dataset, data_root, split=_split(split, trial), mode=mode, direction=direction)
    _print(json.dumps(summary) if as_json else format_check(summary))


@app.command("prepare-data")
def prepare_data_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names())],
    data_root: DataRootOpt = None,
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Decode and resize each split once into the memory-mapped uint8 array cache.

    Example: pipeline prepare-data --dataset llcm --data-root /data/LLCM --profile paper
    """
    from common.datasets import dataset_spec
    from pipelines.data import load_splits

    cfg = _config(profile, config)
    splits = load_splits(cfg, dataset, data_root, cache_dir=cache_dir, with_test=dataset_spec(dataset).has_test, split=_split(split, trial))
    for name, split in (("train", splits.train), ("test", splits.test)):
        if split is not None:
            path = getattr(split.images, "filename", None)
            _print(f"{name}: {len(split)} images {split.images.shape[1]}x{split.images.shape[2]} -> {path}")


@app.command("run-all")
def run_all_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names(with_test=True))] = DEMO,
    data_root: DataRootOpt = None,
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    method: MethodOpt = None,
    cache_dir: CacheDirOpt = None,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="ImageNet ResNet-50 weights for both stages: PATH | imagenet | none")] = None,
    edge: EdgeOpt = None,
    edge_mode: EdgeModeOpt = None,
    vgg16: Vgg16Opt = None,
) -> None:
    """Run everything: the demo data (when missing), stage 1, the partner cache, stage 2 and the dataset's test.

    Examples: pipeline run-all

    pipeline run-all --dataset sysu --data-root /data/SYSU-MM01 --profile paper --pretrained /weights/resnet50-0676ba61.pth
    """
    _deterministic(deterministic)
    from common.datasets import dataset_spec
    from common.runtime import resolve_device
    from pipelines.commands import build_config, default_run_dir
    from pipelines.results import format_results
    from pipelines.run_all import run_all

    split = _split(split, trial)
    if not dataset_spec(dataset).has_test:
        raise UserError(f"run-all --dataset {dataset}: use one of {_dataset_names(with_test=True)} (a dataset with a re-ID test)")
    overrides: dict[str, Any] = {}
    if pretrained is not None:
        overrides = {"gan": {"pretrained": pretrained}, "fusion": {"backbone": {"pretrained": pretrained}}}
    cfg, method = build_config(profile, config, overrides, method=method, edge=edge, edge_mode=edge_mode, vgg16=vgg16)
    results = run_all(cfg, dataset=dataset, data_root=data_root, run_dir=run_dir or default_run_dir(dataset, split, method, cfg.profile),
                      device=resolve_device(device), method=method, cache_dir=cache_dir, split=split)
    _print(format_results(results))
    base = results["untrained_baseline"]
    _print(f"same network untrained: Rank-1 {base['rank1']['mean']:.2f}  mAP {base['mean_ap']['mean']:.2f}  mINP {base['minp']['mean']:.2f}")
    start = results.get("start_baseline")
    if start is not None:
        _print(f"same network at its pretrained start: Rank-1 {start['rank1']['mean']:.2f}  mAP {start['mean_ap']['mean']:.2f}  "
               f"mINP {start['minp']['mean']:.2f}")
    _print(schedule_line(results.get("training", {}), cfg.profile, method))
    _print(f"wall time {results['wall_seconds']:.0f} s; results: {Path(results['run_dir']) / 'results.json'}")


def schedule_line(training: dict[str, Any], profile: str, method: str) -> str:
    """How long this run trained, and what the longer schedule of its profile trains when there
    is one (``<profile>-full``, the ablation's: the demo's run-all trains fewer steps)."""
    steps = training.get("stage2_optimiser_steps")
    acc = training.get("final_train_acc")
    parts = ([f"{training['stage1_optimiser_steps']:,} DSGAN steps"] if training.get("stage1_optimiser_steps") else []) + \
            ([f"{steps:,} {method} steps (final training accuracy {acc:.2f})"] if steps else [])
    line = f"trained {' and '.join(parts)} (profile {profile})" if parts else f"profile {profile}"
    full = f"{profile}-full"
    if full in PROFILES:
        from stage2_fusion.methods import load_config

        cfg = load_config(full)
        recipe = cfg.fusion.recipes.get(method)  # a method registered from outside has no table there
        if recipe is None:
            return line
        longer = [f"{cfg.gan.epochs * cfg.gan.steps_per_epoch:,} DSGAN steps"] if training.get("stage1_optimiser_steps") else []
        if recipe.steps_per_epoch:
            longer.append(f"{recipe.epochs * recipe.steps_per_epoch:,} {method} steps")
        line += f"; the {full} profile, which the ablation uses, trains {' and '.join(longer)}: pipeline run-all --profile {full}"
    return line


@app.command("train-gan")
def train_gan_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names())],
    data_root: DataRootOpt = None,
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: CacheDirOpt = None,
    height: Annotated[Optional[int], typer.Option(help="image height (default: the profile's)")] = None,
    width: Annotated[Optional[int], typer.Option(help="image width (default: the profile's)")] = None,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="ImageNet ResNet-50 for the encoders: PATH | imagenet | none")] = None,
) -> None:
    """Train stage 1 only: the DSGAN (visible-gray <-> infrared, unpaired) on a training split.

    Example: pipeline train-gan --dataset demo --run-dir checkpoints/gan-demo
    """
    _deterministic(deterministic)
    from common.runtime import resolve_device
    from pipelines.commands import train_gan_command

    overrides: dict[str, Any] = {"data": {}}
    if height:
        overrides["data"]["height"] = height
    if width:
        overrides["data"]["width"] = width
    if pretrained is not None:
        overrides["gan"] = {"pretrained": pretrained}
    path = train_gan_command(_config(profile, config, overrides), dataset, data_root, run_dir, resolve_device(device),
                             split=_split(split, trial), cache_dir=cache_dir)
    _print(f"generator checkpoint: {path}")


@app.command("generate-pairs")
def generate_pairs_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="gan.pt from train-gan")],
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names())],
    out: Annotated[Path, typer.Option("--out", help="partner cache folder to write")],
    data_root: DataRootOpt = None,
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: CacheDirOpt = None,
    profile: ProfileOpt = "demo",
    shard_size: Annotated[int, typer.Option("--shard-size", help="partners per shard (a killed run resumes from its finished shards)")] = 1024,
) -> None:
    """Write a partner cache: a trained DSGAN's partner for every training image.

    Example: pipeline generate-pairs --checkpoint checkpoints/gan-demo/gan/gan.pt --dataset demo --out checkpoints/pairs-demo
    """
    _deterministic(deterministic)
    from common.runtime import resolve_device
    from pipelines.commands import generate_pairs_command

    cache = generate_pairs_command(checkpoint, dataset, out, resolve_device(device), profile=profile, data_root=data_root,
                                   split=_split(split, trial), cache_dir=cache_dir, shard_size=shard_size)
    _print(f"partner cache: {cache.folder} ({len(cache)} partners)")


@app.command("train-fusion")
def train_fusion_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names(with_test=True))],
    partners: Annotated[Optional[str], typer.Option("--partners", help="methods that train on partners: a partner cache folder from generate-pairs, 'on-the-fly' (needs --gan-checkpoint), or 'gray' (no GAN: the tsme-gray control)")] = None,
    pairs: Annotated[Optional[str], typer.Option("--pairs", hidden=True, help="deprecated: --partners")] = None,
    gan_checkpoint: Annotated[Optional[Path], typer.Option("--gan-checkpoint", help="frozen generator for --partners on-the-fly")] = None,
    data_root: DataRootOpt = None,
    split: SplitOpt = 1,
    trial: OldTrialOpt = None,
    method: MethodOpt = None,
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: CacheDirOpt = None,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="ImageNet ResNet-50: PATH | imagenet | none")] = None,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers slicing the arrays (0 = main process)")] = 0,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the training step")] = False,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="SyncBatchNorm under torchrun (several GPUs)")] = False,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue a killed run from its last.pt (default) or refuse to")] = True,
    edge: EdgeOpt = None,
    edge_mode: EdgeModeOpt = None,
    vgg16: Vgg16Opt = None,
) -> None:
    """Train stage 2 only: a re-ID method on real images (and, for a method that needs them, their partners).

    The command keeps the design card's name; nothing is fused unless the method fuses
    (TSME). Several processes: torchrun --nproc_per_node N -m pipelines train-fusion ...
    (DDP; rank 0 writes).

    Example: pipeline train-fusion --dataset demo --partners checkpoints/pairs-demo --method tsme --run-dir checkpoints/fusion-demo
    """
    _deterministic(deterministic)
    from pipelines.commands import build_config, train_reid_command

    if pairs is not None:
        _deprecated("--pairs", "--partners")
        partners = partners or pairs
    overrides = {"fusion": {"backbone": {"pretrained": pretrained}}} if pretrained is not None else {}
    cfg, method = build_config(profile, config, overrides, method=method, edge=edge, edge_mode=edge_mode, vgg16=vgg16)
    path = train_reid_command(cfg, method, dataset, data_root, run_dir, device, partners=partners, gan_checkpoint=gan_checkpoint,
                              split=_split(split, trial), cache_dir=cache_dir, resume=resume, workers=workers,
                              compile_model=compile_model, sync_bn=sync_bn)
    if path is not None:
        _print(f"re-ID checkpoint: {path}")


@app.command("test")
def test_cmd(
    checkpoint: Annotated[list[Path], typer.Option("--checkpoint", help="reid.pt (or best.pt); a dataset of several splits (RegDB): one per --split, repeated")],
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names(with_test=True))],
    data_root: DataRootOpt = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="SYSU-MM01: all | indoor search")] = None,
    shots: Annotated[Optional[int], typer.Option("--shots", help="SYSU-MM01 gallery images per identity per camera: 1 | 10")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="random gallery draws, seed = draw index (SYSU-MM01, LLCM)")] = None,
    direction: Annotated[Optional[str], typer.Option("--direction", help="RegDB/LLCM: v2i (visible query) | i2v")] = None,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="SYSU-MM01 galleries: random (AGW) | official (rand_perm_cam.mat)")] = None,
    perm_file: Annotated[Optional[Path], typer.Option("--perm-file", help="rand_perm_cam.mat for --protocol official")] = None,
    split: Annotated[Optional[list[int]], typer.Option("--split", help="RegDB: the split of each --checkpoint (1..10), repeated (default: the recorded one)")] = None,
    trial: Annotated[Optional[list[int]], typer.Option("--trial", hidden=True, help="deprecated: --split")] = None,
    feature: Annotated[Optional[str], typer.Option("--feature", help="pre | post BNNeck feature")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="average with the flipped image's feature")] = False,
    gan_checkpoint: Annotated[Optional[Path], typer.Option("--gan-checkpoint", help="generator for test-time partners (default: the one recorded)")] = None,
    untrained: Annotated[bool, typer.Option("--untrained", help="evaluate the same architecture untrained (baseline)")] = False,
    rerank: Annotated[bool, typer.Option("--rerank", help="k-reciprocal re-ranking (Zhong et al., CVPR 2017); figures labelled re-ranked")] = False,
    edge: Annotated[Optional[str], typer.Option("--edge", help="the edge operator the checkpoint must have been trained with (checked)")] = None,
    edge_mode: Annotated[Optional[str], typer.Option("--edge-mode", help="the edge mode it must have been trained with: mso | magnitude")] = None,
    k1: Annotated[int, typer.Option("--k1", help="re-ranking: k of the k-reciprocal sets (TSME's testreranking.py: 31)")] = 20,
    k2: Annotated[int, typer.Option("--k2", help="re-ranking: local query expansion size (TSME: 19)")] = 6,
    lambda_value: Annotated[float, typer.Option("--lambda", help="re-ranking: weight of the original distance (0..1)")] = 0.3,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: CacheDirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="results file (default: results-<dataset>-<protocol>.json in the run dir)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as one JSON object")] = False,
) -> None:
    """Test re-ID checkpoints with the dataset's standard protocol (Rank-k, mAP, mINP over gallery draws).

    RegDB: one model per split; pass --checkpoint and --split once per split to get mean +/- std.

    Example: pipeline test --checkpoint checkpoints/fusion-demo/fusion/reid.pt --dataset demo --mode all
    """
    _deterministic(deterministic)
    from common.atomic import atomic_write_json
    from common.checkpoint import load_checkpoint
    from common.runtime import resolve_device
    from pipelines.commands import results_tag, test_command
    from pipelines.results import format_results
    from stage2_fusion.methods import config_from_checkpoint

    if trial:
        _deprecated("--trial", "--split (the dataset's train/test split; --trials counts gallery draws)")
        split = split or trial
    if rerank and not (k1 >= 1 and k2 >= 1 and 0.0 <= lambda_value <= 1.0):
        raise UserError(f"--k1 {k1} --k2 {k2} --lambda {lambda_value}: re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1")
    if edge is not None or edge_mode is not None:
        for ckpt in checkpoint:
            state = load_checkpoint(ckpt, "reid")
            check_edge_choice(ckpt, config_from_checkpoint(state["config"]).fusion.recipes.get(state["method"]), edge, edge_mode)
    result = test_command(checkpoint, dataset, resolve_device(device), data_root=data_root, splits_wanted=split, mode=mode, shots=shots,
                          trials=trials, direction=direction, protocol=protocol, perm_file=perm_file, feature=feature, flip=flip,
                          gan_checkpoint=gan_checkpoint, untrained=untrained, cache_dir=cache_dir,
                          rerank={"k1": k1, "k2": k2, "lambda_value": lambda_value} if rerank else None)
    result["untrained"] = untrained
    out = out or Path(checkpoint[0]).resolve().parent.parent / f"results-{dataset}-{results_tag(result)}.json"
    atomic_write_json(out, result)
    if as_json:
        _print(json.dumps(result))
    else:
        _print(format_results(result))
        _print(f"results: {out}")


@app.command("ablate")
def ablate_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names(with_test=True))] = DEMO,
    data_root: DataRootOpt = None,
    profile: ProfileOpt = "demo",
    config: ConfigOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", help="seeds per variant (0 .. N-1)")] = 3,
    variants: Annotated[str, typer.Option("--variants", help="comma-separated variants, baseline first: <method>[-<modifier>]*, "
                                                             "e.g. agw,tsme,tsme-gray,tsme-noiai,tsme-nogate,mso-sobel; "
                                                             f"modifiers each method accepts: {_modifier_names()}")] = "agw,tsme,tsme-gray",
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Compare variants over seeds: train and test each on the same data; report means, per-seed values and paired differences.

    Example: pipeline ablate --dataset demo --profile demo-full --seeds 5 --variants agw,agw-caj,tsme,tsme-gray,tsme-caj --run-dir checkpoints/ablation-demo-full
    """
    _deterministic(deterministic)
    from common.runtime import resolve_device
    from pipelines.ablate import ablate, format_ablation

    names = [v.strip() for v in variants.split(",") if v.strip()]
    run_dir = run_dir or Path("checkpoints") / f"ablate-{dataset}-{profile}"
    report = ablate(dataset=dataset, data_root=data_root, profile=profile, config_file=config, variants=names, seeds=seeds,
                    run_dir=run_dir, device=resolve_device(device), cache_dir=cache_dir)
    _print(format_ablation(report))
    _print(f"report: {run_dir / 'ablation.json'}, {run_dir / 'ablation.md'}")


@app.command("show-ranks")
def show_ranks_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="reid.pt (or best.pt)")],
    dataset: Annotated[str, typer.Option("--dataset", help=_dataset_names(with_test=True))],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write")],
    data_root: DataRootOpt = None,
    worst: Annotated[int, typer.Option("--worst", help="how many of the lowest-AP queries to show")] = 8,
    query: Annotated[Optional[int], typer.Option("--query", help="show the queries of this identity instead (lowest AP first)")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="SYSU-MM01: all | indoor")] = None,
    direction: Annotated[Optional[str], typer.Option("--direction", help="RegDB/LLCM: v2i | i2v")] = None,
    split: Annotated[int, typer.Option("--split", help="RegDB: the split of the checkpoint (1..10; default: the recorded one)")] = 1,
    trial: OldTrialOpt = None,
    gan_checkpoint: Annotated[Optional[Path], typer.Option("--gan-checkpoint", help="generator for test-time partners (default: the one recorded)")] = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
) -> None:
    """Draw the worst queries (lowest AP) with their top-10 gallery images: green = right identity, red = wrong, distance under each.

    Example: pipeline show-ranks --checkpoint checkpoints/demo-tsme-demo/fusion/reid.pt --dataset demo --out worst.png --worst 8
    """
    from common.datasets import dataset_spec
    from common.runtime import resolve_device
    from pipelines.commands import checkpoint_splits
    from pipelines.insight import show_ranks

    if not dataset_spec(dataset).has_test:
        raise UserError(f"--dataset {dataset} has no re-ID test protocol; use one of: {_dataset_names(with_test=True)}")
    _, splits, _ = checkpoint_splits(checkpoint, dataset, data_root, split=_split(split, trial), cache_dir=cache_dir)
    result = show_ranks(checkpoint, splits, resolve_device(device), out, worst=worst, query_pid=query, gan_checkpoint=gan_checkpoint,
                        mode=mode, direction=direction)
    for r in result["rows"]:
        ranks = " ".join(("+" if t["correct"] else "-") + str(t["pid"]) for t in r["top"])
        _print(f"query pid {r['pid']} cam {r['cam']} AP {r['ap']:.3f}: {ranks}")
    _print(f"grid: {result['png']}")


@app.command("compare")
def compare_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (two or more)")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Compare runs in one table: their metrics and every config key whose value differs.

    Example: pipeline compare checkpoints/ablation-demo/agw/seed0 checkpoints/ablation-demo/tsme/seed0
    """
    from pipelines.insight import compare_runs, format_comparison

    comparison = compare_runs(run_dirs)
    _print(json.dumps(comparison) if as_json else format_comparison(comparison))


@app.command("eval-gan")
def eval_gan_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="gan.pt from train-gan")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="aligned folder with visible/ and infrared/, or the dataset's folder")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="an aligned dataset (pairs: visible/ + infrared/ folders) or the demo (its aligned near-infrared twins): L1/PSNR/SSIM + two-sample; sysu | regdb | llcm: two-sample on the training split")] = ALIGNED,
    device: DeviceOpt = "auto",
    deterministic: DeterministicOpt = False,
    score: Annotated[str, typer.Option("--score", help="aligned folders: held-out | all pairs to score")] = "held-out",
    split: Annotated[str, typer.Option("--split", help="which published train/test split (RegDB 1..10); held-out | all: deprecated, use --score")] = "1",
    trial: OldTrialOpt = None,
    cache_dir: CacheDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Score a DSGAN's translations: L1, PSNR, SSIM against aligned images and the two-sample realism test, beside the gray copy.

    Example: pipeline eval-gan --checkpoint checkpoints/gan-demo/gan/gan.pt --dataset demo
    """
    _deterministic(deterministic)
    from common.datasets import dataset_spec
    from common.runtime import resolve_device
    from stage1_dsgan.evaluate import evaluate_gan, evaluate_gan_on_split

    if split in ("held-out", "all"):  # the old meaning of --split here
        _deprecated(f"eval-gan --split {split}", f"--score {split}")
        score, split = split, "1"
    if not split.isdigit():
        raise UserError(f"--split {split}: give the dataset's split number (RegDB 1..10), or --score held-out | all")
    if score not in ("held-out", "all"):
        raise UserError(f"--score {score} is unknown; use held-out or all")
    spec = dataset_spec(dataset)
    dev = resolve_device(device)
    if spec.aligned:
        if data_root is None:
            raise UserError("--data-root is required: the aligned folder holding visible/ and infrared/")
        result = evaluate_gan(checkpoint, data_root, dev, held_out_only=score == "held-out")
        what = f"{result['pairs']} aligned pairs ({score})"
    else:
        from pipelines.commands import checkpoint_splits

        twins = spec.aligned_twins is not None  # the demo: every visible image has its infrared twin
        _, splits, _ = checkpoint_splits(checkpoint, dataset, data_root, split=_split(int(split), trial), cache_dir=cache_dir,
                                         with_test=twins, kind="dsgan")
        if twins:  # scored on the test identities, which the GAN never saw
            from pipelines.stages import partner_probe
            from stage1_dsgan.evaluate import evaluate_gan_pairs

            result = evaluate_gan_pairs(checkpoint, spec.aligned_twins(splits.index.root, splits.index.test), dev,
                                        probe=partner_probe(splits))
            what = (f"{dataset} test identities (never trained on): {result['pairs']} visible images against their aligned infrared "
                    "twins; partner R-1: raw-pixel Rank-1 of the infrared test images against the partners")
        else:
            result = evaluate_gan_on_split(checkpoint, splits.train, dev)
            what = f"{dataset} training split, {result['images']['vis']} visible / {result['images']['ir']} infrared held-out images"
    if as_json:
        _print(json.dumps(result))
        return
    _print(f"{what} at {result['image_size'][0]}x{result['image_size'][1]}")
    cols = [("L1 (0-1)", "l1", 10, ".4f"), ("PSNR dB", "psnr", 10, ".2f"), ("SSIM", "ssim", 8, ".4f"),
            ("partner R-1", "partner_rank1", 13, ".2f"), ("2-sample v->i", "two_sample_vis2ir", 15, ".3f"),
            ("2-sample i->v", "two_sample_ir2vis", 15, ".3f")]
    cols = [c for c in cols if c[1] in result["model"]]
    _print(f"{'':>28}" + "".join(f"{name:>{w}}" for name, _, w, _ in cols))
    rows = [("DSGAN", "model"), ("grayscale visible (baseline)", "baseline")] + ([("aligned twin (oracle)", "twin")] if "twin" in result else [])
    for name, key in rows:
        r = result[key]
        _print(f"{name:>28}" + "".join(f"{r[k]:>{w}{fmt}}" if k in r else f"{'-':>{w}}" for _, k, w, fmt in cols))
    _print("two-sample: held-out accuracy of a small classifier telling real from translated images (0.5 = indistinguishable)")


@app.command("tensorboard")
def tensorboard_cmd(
    logdir: Annotated[Path, typer.Option("--logdir", help="run directory (or checkpoints/ for all runs)")] = Path("checkpoints"),
    port: Annotated[int, typer.Option(help="port to serve on")] = 6006,
    host: Annotated[str, typer.Option(help="interface to bind")] = "localhost",
) -> None:
    """Serve TensorBoard on a run directory and print its URL (Ctrl-C stops it).

    Example: pipeline tensorboard --logdir checkpoints/demo-tsme-demo
    """
    import time

    if not logdir.exists():
        raise UserError(f"{logdir} does not exist; pass a run directory such as checkpoints/demo-tsme-demo")
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--port", str(port), "--host", host])
    url = board.launch()
    _print(f"TensorBoard on {logdir}: {url}  (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass



# --------------------------------------------------------------------------- use a trained model

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="reid.pt (or best.pt) of train-fusion / run-all")]
GanCheckpointOpt = Annotated[Optional[Path], typer.Option("--gan-checkpoint", help="TSME: generator for the partners (default: the one recorded)")]
FlipOpt = Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="average with the flipped image (default: as the checkpoint tests)")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="images per forward pass (default: the checkpoint's eval.batch_size)")]


@app.command("extract")
def extract_cmd(
    checkpoint: CheckpointOpt,
    images: Annotated[list[Path], typer.Option("--images", help="image files and/or folders (searched recursively); more may follow")],
    modality: Annotated[str, typer.Option("--modality", help="visible | infrared")],
    out: Annotated[Path, typer.Option("--out", help="feature file to write (.npz)")],
    more_images: Annotated[Optional[list[Path]], typer.Argument(help="more image files or folders", show_default=False)] = None,
    flip: FlipOpt = None,
    batch_size: BatchSizeOpt = None,
    gan_checkpoint: GanCheckpointOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Extract features of pictures (files or folders) with a trained model, as its test protocol does; write them to a .npz.

    Example: pipeline extract --checkpoint checkpoints/demo-tsme-demo/fusion/reid.pt --images gallery/ --modality visible --out gallery.npz
    """
    from pipelines.inference import ReidExtractor, extract_to_file

    extractor = ReidExtractor(checkpoint, device, gan_checkpoint=gan_checkpoint, flip=flip, batch_size=batch_size)
    result = extract_to_file(extractor, [*images, *(more_images or [])], modality, out)
    if result["skipped"]:
        from common.runlog import info

        shown = ", ".join(result["skipped"][:5]) + (f" and {len(result['skipped']) - 5} more" if len(result["skipped"]) > 5 else "")
        info(f"extract: skipped {len(result['skipped'])} files not named like images: {shown}")
    _print(f"{result['count']} {result['modality']} images -> {result['out']}: features ({result['count']}, {result['dim']}) float32, "
           f"{result['method']} feature {result['feature']}{' + flip' if result['flip'] else ''}, checkpoint SHA-256 {result['checkpoint_sha256'][:12]}...")


@app.command("search")
def search_cmd(
    checkpoint: CheckpointOpt,
    query: Annotated[list[Path], typer.Option("--query", help="query image file or folder (repeat for more)")],
    gallery: Annotated[Path, typer.Option("--gallery", help="gallery folder of images, or a feature file (.npz) from pipeline extract")],
    query_modality: Annotated[str, typer.Option("--query-modality", help="visible | infrared")] = "infrared",
    gallery_modality: Annotated[str, typer.Option("--gallery-modality", help="visible | infrared")] = "visible",
    top: Annotated[int, typer.Option("--top", help="gallery items per query")] = 10,
    out: Annotated[Optional[Path], typer.Option("--out", help="PNG grid of the queries and their ranked gallery")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per query")] = False,
    flip: FlipOpt = None,
    batch_size: BatchSizeOpt = None,
    gan_checkpoint: GanCheckpointOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Search a gallery (folder or .npz) for each query by the protocol's distance (1 - cosine); table, JSON or a PNG grid.

    Example: pipeline search --checkpoint checkpoints/demo-tsme-demo/fusion/reid.pt --query night/cam3.jpg --gallery gallery.npz --top 10
    """
    from pipelines.inference import ReidExtractor
    from pipelines.search import format_search, search, search_grid

    extractor = ReidExtractor(checkpoint, device, gan_checkpoint=gan_checkpoint, flip=flip, batch_size=batch_size)
    result = search(extractor, query, gallery, query_modality=query_modality, gallery_modality=gallery_modality, top=top)
    if as_json:
        for q in result["queries"]:
            _print(json.dumps({"query": q["query"], "query_modality": result["query_modality"],
                               "gallery_modality": result["gallery_modality"], "results": q["results"]}))
    else:
        _print(format_search(result))
    if out is not None:
        search_grid(result, extractor.image_size, out)
        from common.runlog import info

        info(f"search: grid {out}")


@app.command("export")
def export_cmd(
    checkpoint: CheckpointOpt,
    out: Annotated[Path, typer.Option("--out", help="model.onnx: writes model-visible.onnx and model-infrared.onnx")],
    format_: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset")] = 18,
    flip: FlipOpt = None,
    gan_checkpoint: GanCheckpointOpt = None,
) -> None:
    """Export one ONNX graph per modality (pixels in [0, 1] -> features), verified with onnxruntime against PyTorch before writing.

    Example: pipeline export --checkpoint checkpoints/demo-tsme-demo/fusion/reid.pt --format onnx --out model.onnx
    """
    from pipelines.export import INSTALL_LINE, export_onnx, missing_export_packages

    if format_ != "onnx":
        raise UserError(f"--format {format_} is not supported; use --format onnx")
    missing = missing_export_packages()
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}, not installed: {INSTALL_LINE}")
    from pipelines.inference import ReidExtractor

    extractor = ReidExtractor(checkpoint, "cpu", gan_checkpoint=gan_checkpoint, flip=flip)
    for r in export_onnx(extractor, out, opset=opset):
        _print(f"{r['modality']}: {r['path']}  onnxruntime vs PyTorch max |diff| {r['max_abs_diff']:.3g}")

def main() -> None:
    """Console entry point: run the app, turning UserError into one line and exit 2."""
    try:
        app()
    except UserError as exc:
        from rich.text import Text

        from common.runlog import console

        console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), soft_wrap=True)  # no markup: messages hold [...]
        sys.exit(2)
