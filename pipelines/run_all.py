"""The whole job and its stages: data -> DSGAN -> pair cache -> fusion re-ID -> test.

Every stage function is what one CLI command calls; :func:`run_all` chains them into one
run directory::

    checkpoints/<run>/config.toml        the resolved config (frozen copy)
    checkpoints/<run>/gan/{last,gan}.pt  stage 1
    checkpoints/<run>/pairs/             pair cache (common.data.pair_cache)
    checkpoints/<run>/fusion/{last,best,reid}.pt   stage 2
    checkpoints/<run>/tb/, metrics.jsonl TensorBoard events and per-epoch records
    checkpoints/<run>/results.json       test metrics (trained and untrained)

A stage whose output is complete and current is skipped; an interrupted stage resumes
from its ``last.pt`` (or finished shards); an output made with other settings is never
overwritten (the error says to use another run directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write_json, atomic_write_text
from common.checkpoint import file_sha256
from common.config import (Config, config_section_dict, dump_config, edge_summary, for_method, require_pretrained_choice, test_feature,
                           uses_pef)
from common.errors import UserError
from common.data.pair_cache import MANIFEST, PairCache, open_pair_cache
from common.evaluation.protocols import ProtocolSpec
from common.runlog import info
from pipelines.data import Splits
from pipelines.partners import GRAY_PARTNERS, MemoPartners, gray_partners
from stage1_dsgan.generate import generate_pairs, load_generators, make_translator
from stage1_dsgan.train import train_gan
from stage2_fusion.evaluate import evaluate_protocol, load_reid_model
from stage2_fusion.train import TrainOptions, train_fusion

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mean_ap", "minp")
LAST_EPOCH = "last epoch"
#: k-reciprocal re-ranking defaults (Zhong et al., CVPR 2017, and the authors' code); TSME's
#: testreranking.py uses k1 31, k2 19, lambda 0.3.
DEFAULT_RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}
BEST_ON_TEST = "best test-set Rank-1 during training (optimistic: chosen on the test set, as AGW and TSME report)"


def prepare_config(cfg: Config, method: str, device: torch.device, *, partners: str = "gan") -> Config:
    """The configuration a run of ``method`` trains with: the method's input size
    (:func:`common.config.for_method`) and every ``"demo-standin"`` it needs replaced by the
    stand-in's file, built first when missing (:func:`common.demo.standin.resolve_standins`): the
    DSGAN encoder's when the method trains on the GAN's partners, the re-ID body's, and
    VGG16 when the method uses MSO's PEF loss.

    Raises:
        UserError: a recipe missing for ``method``.
    """
    from common.demo.standin import resolve_standins
    from stage2_fusion.methods import METHODS

    cfg = for_method(cfg, method)
    needs_gan = METHODS[method][0].needs_partners and partners == "gan"
    return resolve_standins(cfg, device, gan=needs_gan, fusion=True, vgg16=uses_pef(cfg, method))


def uses_pretrained(cfg: Config) -> bool:
    """Whether the re-ID network starts from a weights file (ImageNet or the demo's stand-in)."""
    return cfg.fusion.backbone.pretrained not in ("", "none", "required")


def write_run_config(cfg: Config, run_dir: Path) -> Path:
    """Write ``config.toml`` into the run directory, refusing to change an existing one.

    Raises:
        UserError: the run directory holds a run made with another configuration.
    """
    path = Path(run_dir) / "config.toml"
    text = dump_config(cfg)
    if path.exists() and path.read_text() != text:
        raise UserError(f"{run_dir} holds a run made with another configuration ({path}); pass another --run-dir")
    if not path.exists():
        atomic_write_text(path, text)
    return path


def make_protocol(cfg_eval, dataset: str, data_root: Path, **overrides: Any) -> ProtocolSpec:
    """The test protocol of ``dataset`` from the eval config, with flag overrides.

    RegDB has one trial per trained model (its split); SYSU-MM01 queries are infrared.

    Raises:
        UserError: official protocol without a ``rand_perm_cam.mat`` to read.
    """
    e = {**config_section_dict(cfg_eval), **{k: v for k, v in overrides.items() if v is not None}}
    perm_file = None
    if dataset in ("sysu", "demo") and e["protocol"] == "official":
        perm = Path(e["perm_file"]) if e["perm_file"] else Path(data_root) / "exp" / "rand_perm_cam.mat"
        if not perm.is_file():
            raise UserError(
                f"the official SYSU-MM01 protocol reads rand_perm_cam.mat, not found at {perm}; pass --perm-file "
                "(it ships with the official evaluation code, wuancong/SYSU-MM01 evaluation/data_split/)"
            )
        perm_file = str(perm)
    if dataset not in ("sysu", "demo") and e["protocol"] == "official":
        raise UserError(f"--protocol official exists for SYSU-MM01 only, not {dataset}")
    try:
        return ProtocolSpec(
            dataset=dataset, mode=e["mode"], shots=e["shots"],
            direction=e["direction"] if dataset in ("regdb", "llcm") else "i2v",
            protocol=e["protocol"], num_trials=1 if dataset == "regdb" else e["trials"], perm_file=perm_file,
        )
    except ValueError as exc:
        raise UserError(f"{exc}; check --mode, --shots, --direction and --protocol for --dataset {dataset}") from None


def file_numbers(samples) -> np.ndarray:
    """The number in each file name (SYSU-MM01 ``0007.jpg`` -> 7; -1 where there is none)."""
    out = np.full(len(samples), -1, dtype=np.int64)
    for i, sample in enumerate(samples):
        stem = Path(sample.path).stem
        if stem.isdigit():
            out[i] = int(stem)
    return out


def stage_train_gan(cfg: Config, splits: Splits, run_dir: Path, device: torch.device) -> Path:
    """Stage 1 into ``<run>/gan``; returns ``gan.pt``.

    Raises:
        UserError: the paper profile without a choice of ImageNet weights.
    """
    require_pretrained_choice(cfg, gan=True, fusion=False)
    return train_gan(cfg, splits.train, Path(run_dir) / "gan", device, dataset=splits.index.name, aligned=splits.index.name == "pairs")


def stage_generate_pairs(gan_path: Path, splits: Splits, out: Path, device: torch.device, *, shard_size: int = 1024) -> PairCache:
    """Pair cache for the training split (skipped when a current one exists); returns it opened."""
    out = Path(out)
    gan_sha = file_sha256(gan_path)
    expected = dict(dataset=splits.index.name, data_fingerprint=splits.train.fingerprint,
                    image_size=tuple(splits.train.images.shape[1:3]), count=len(splits.train), generator_sha256=gan_sha)
    if (out / MANIFEST).exists():
        cache = open_pair_cache(out, **expected)
        info(f"generate-pairs: {out} is complete and current, skipped")
        return cache
    generate_pairs(gan_path, splits.train, out, device, dataset=splits.index.name, data_root=splits.index.root, shard_size=shard_size)
    return open_pair_cache(out, **expected)


def _test_partners(gan_path: str | None, gan_sha: str | None, splits: Splits, device: torch.device) -> MemoPartners:
    if gan_path == GRAY_PARTNERS:  # the tsme-gray control: no generator
        return MemoPartners(gray_partners, len(splits.test))
    if not gan_path or not Path(gan_path).is_file():
        raise UserError(
            f"this model translates test images with its generator {gan_path}, which is missing; pass --gan-checkpoint GAN.pt"
        )
    gens = load_generators(Path(gan_path), device)
    if gan_sha and gens.sha256 != gan_sha:
        raise UserError(f"generator {gan_path} changed since the model was trained; pass the original with --gan-checkpoint")
    return MemoPartners(make_translator(gens, device), len(splits.test))


def stage_train_fusion(
    cfg: Config,
    method: str,
    splits: Splits,
    cache: PairCache | None,
    run_dir: Path,
    device: torch.device,
    *,
    on_the_fly_gan: Path | None = None,
    gray: bool = False,
    options: TrainOptions = TrainOptions(),
) -> Path:
    """Stage 2 into ``<run>/fusion``; returns ``reid.pt``.

    Partners come from ``cache`` (pair cache) or, with ``on_the_fly_gan``, from that frozen
    generator inside each training step (TSME's own way), or with ``gray`` from no GAN at all
    (:func:`pipelines.partners.gray_partners`, the ``tsme-gray`` control).
    """
    from stage2_fusion.methods import METHODS

    require_pretrained_choice(cfg, gan=False, vgg16=uses_pef(cfg, method))
    recipe = cfg.fusion.recipe(method)
    if uses_pef(cfg, method) and cfg.fusion.vgg16 in ("", "none"):
        from common.nets.vgg import VGG16_URL

        info(f"stage 2 ({method}): MSO's PEF loss compares VGG16 features, and no ImageNet VGG16 was given (--vgg16): VGG16 "
             f"starts from random initialisation, which is not MSO's setting; for MSO's, download {VGG16_URL} and pass "
             "--vgg16 PATH")
    from common.demo.standin import describe_weights

    meta: dict[str, Any] = {"dataset": splits.index.name, "edge": edge_summary(cfg, method), "pretrained_weights": describe_weights(cfg)}
    if splits.index.name == "regdb":  # pipeline test checks it: another split's test ids are training ids here
        meta["regdb_trial"] = splits.index.extra["trial"]
    translate = partner_id = None
    if cache is not None:
        manifest = cache.manifest
        partner_id = f"{manifest['generator_sha256']}:{manifest['data_fingerprint']}"
        meta.update({"gan_checkpoint": manifest["generator"], "gan_sha256": manifest["generator_sha256"], "pairs": str(cache.folder)})
    elif on_the_fly_gan is not None:
        gens = load_generators(on_the_fly_gan, device)
        if tuple(gens.image_size) != (cfg.data.height, cfg.data.width):
            raise UserError(f"{on_the_fly_gan} was trained at {gens.image_size[0]}x{gens.image_size[1]}, this run uses "
                            f"{cfg.data.height}x{cfg.data.width}; use the GAN's profile")
        translate = make_translator(gens, device, amp=cfg.gan.amp)
        partner_id = f"{gens.sha256}:on-the-fly"
        meta.update({"gan_checkpoint": str(on_the_fly_gan), "gan_sha256": gens.sha256, "pairs": "on-the-fly"})
    elif gray:
        translate, partner_id = gray_partners, GRAY_PARTNERS
        meta.update({"gan_checkpoint": GRAY_PARTNERS, "gan_sha256": None, "pairs": GRAY_PARTNERS})
    needs_partners = METHODS[method][0].needs_partners
    if needs_partners and partner_id is None:
        raise UserError(f"method {method} needs generated partners: pass --pairs CACHE or --pairs on-the-fly --gan-checkpoint GAN.pt")
    recipe = cfg.fusion.recipe(method)
    evaluate = None
    if recipe.eval_every and splits.test is not None and options.dist.is_main:
        test_partners = _test_partners(meta["gan_checkpoint"], meta["gan_sha256"], splits, device) if needs_partners else None

        spec = make_protocol(cfg.eval, splits.index.name, splits.index.root, trials=1)
        numbers = file_numbers(splits.index.test) if spec.protocol == "official" else None

        def evaluate(model):
            return evaluate_protocol(model, splits.test, device, spec, partners=test_partners, file_numbers=numbers,
                                     feature=test_feature(cfg, method), batch_size=cfg.eval.batch_size, amp=cfg.eval.amp,
                                     show_progress=False, return_features=True)

    return train_fusion(cfg, method, splits.train, Path(run_dir) / "fusion", device,
                        pair_cache=cache if needs_partners else None, translate=translate if needs_partners else None,
                        partner_id=partner_id if needs_partners else None, evaluate=evaluate, meta=meta, options=options)


def stage_test(
    checkpoint: Path,
    splits: Splits,
    device: torch.device,
    spec: ProtocolSpec,
    *,
    feature: str,
    flip: bool,
    gan_checkpoint: Path | None = None,
    untrained: bool = False,
    from_start: bool = False,
    batch_size: int = 128,
    rerank: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Test a re-ID checkpoint with a dataset's protocol; returns the results dict
    (``rerank``: k-reciprocal re-ranking parameters, figures then labelled re-ranked;
    ``untrained``: the same network with random initial weights, or with ``from_start`` the
    pretrained weights its training started from)."""
    model, meta, cfg = load_reid_model(checkpoint, device, untrained=untrained, from_start=from_start)
    selection = BEST_ON_TEST if Path(checkpoint).name == "best.pt" else LAST_EPOCH
    if tuple(meta["image_size"]) != tuple(splits.test.images.shape[1:3]):
        raise ValueError("test split decoded at another size than the model's")  # callers decode at meta size
    partners = None
    if model.needs_partners:
        gan = meta.get("gan_checkpoint") if meta.get("pairs") == GRAY_PARTNERS or not gan_checkpoint else str(gan_checkpoint)
        partners = _test_partners(gan, None if gan_checkpoint else meta.get("gan_sha256"), splits, device)
    numbers = file_numbers(splits.index.test) if spec.protocol == "official" else None
    t0 = time.perf_counter()
    summary = evaluate_protocol(model, splits.test, device, spec, partners=partners, file_numbers=numbers,
                                feature=feature, flip=flip, batch_size=batch_size, amp=cfg.eval.amp, rerank=rerank)
    return {
        "dataset": splits.index.name,
        "data_root": str(splits.index.root),
        "dataset_fingerprint": splits.test.fingerprint,
        "method": meta["method"],
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "untrained": untrained,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "edge": edge_summary(cfg, meta["method"]),
        "pretrained_weights": meta.get("pretrained_weights"),
        "epoch": None if untrained else meta.get("epoch"),
        "selection": ("pretrained start" if from_start else "untrained") if untrained else selection,
        "device": str(device),
        "test_seconds": round(time.perf_counter() - t0, 2),
        **({"regdb_trial": splits.index.extra["trial"]} if splits.index.name == "regdb" else {}),
        **summary,
    }


def best_on_test(checkpoint: Path, splits: Splits, device: torch.device, spec: ProtocolSpec, **kwargs: Any) -> dict[str, Any] | None:
    """Test the ``best.pt`` beside a final ``reid.pt`` with the same protocol.

    AGW's and TSME's scripts report the epoch with the best test-set Rank-1 (AGW tests every
    2 epochs, TSME every epoch, both on trial 0); ``best.pt`` is that checkpoint here, kept by
    ``train-fusion`` (``eval_every``). The figure is optimistic: the test set chose the epoch.

    Returns:
        The results dict of ``best.pt`` (``selection`` says what it is), or None when there
        is no ``best.pt`` beside ``checkpoint`` or ``checkpoint`` is ``best.pt`` itself.
    """
    best = Path(checkpoint).parent / "best.pt"
    if Path(checkpoint).name == "best.pt" or not best.is_file():
        return None
    return stage_test(best, splits, device, spec, **kwargs)


def attach_best_on_test(results: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any]:
    """Put the best-on-test figures under ``results["best_on_test"]`` (metrics, epoch, note)."""
    if best is not None:
        results["best_on_test"] = {**{k: best[k] for k in METRIC_KEYS}, "epoch": best.get("epoch"), "checkpoint": best.get("checkpoint"),
                                   "selection": BEST_ON_TEST, **({"splits": best["splits"]} if "splits" in best else {})}
    return results


def combine_trials(results: list[dict[str, Any]]) -> dict[str, Any]:
    """RegDB: one result per trained model (split) -> mean +/- std over the splits.

    Each input's per-trial figures are pooled (population std, as
    :func:`common.evaluation.metrics.summarize`); identity fields are listed per split.
    """
    keys = METRIC_KEYS
    trials = [t for r in results for t in r["trials"]]
    combined = {k: {"mean": float(np.mean([t[k] for t in trials])), "std": float(np.std([t[k] for t in trials]))} for k in keys}
    first = results[0]
    return {
        **{k: first[k] for k in ("dataset", "data_root", "method", "direction", "feature", "flip", "mode", "shots", "device", "reranked")},
        "protocol": first["protocol"].replace("1 trial", f"{len(results)} trials"),
        "num_trials": len(trials), "num_query": first["num_query"], "trials": trials,
        "splits": [{k: r[k] for k in ("regdb_trial", "checkpoint", "checkpoint_sha256", "dataset_fingerprint") if k in r} for r in results],
        **combined,
    }


def format_results(results: dict[str, Any], title: str | None = None) -> str:
    """A results table in the papers' words (Rank-k, mAP, mINP as mean +/- std, percent)."""
    head = title or results["protocol"]
    cols = [("Rank-1", "rank1"), ("Rank-5", "rank5"), ("Rank-10", "rank10"), ("Rank-20", "rank20"), ("mAP", "mean_ap"), ("mINP", "minp")]
    top = "  ".join(f"{c:>13}" for c, _ in cols)

    def row(r: dict[str, Any]) -> str:
        return "  ".join(f"{r[k]['mean']:6.2f} ± {r[k]['std']:4.2f}" for _, k in cols)

    rr = ", re-ranked" if results.get("reranked") else ""
    label = lambda r, what: f"{what}{rr}" + (f" (epoch {r['epoch']})" if r.get("epoch") else "")
    width = 40
    lines = [head, f"{'':<{width}}{top}", f"{label(results, 'last epoch'):<{width}}{row(results)}"]
    best = results.get("best_on_test")
    if best is not None:
        lines.append(f"{label(best, 'best on test, optimistic'):<{width}}{row(best)}")
    extra = results.get("with_reranking")
    if extra is not None:
        p = extra["params"]
        lines.append(f"{'last epoch, re-ranked (k1 %d, k2 %d, λ %.2g)' % (p['k1'], p['k2'], p['lambda_value']):<{width}}{row(extra)}")
    if rr:
        p = results["reranked"]
        lines.append(f"re-ranked: k-reciprocal (Zhong et al., CVPR 2017), k1 {p['k1']}, k2 {p['k2']}, lambda {p['lambda_value']}")
    return "\n".join(lines)


def run_all(
    cfg: Config,
    *,
    dataset: str,
    data_root: Path | None,
    run_dir: Path,
    device: torch.device,
    method: str | None = None,
    cache_dir: Path | None = None,
    trial: int = 1,
    partners: str = "gan",
    stage1_dir: Path | None = None,
    extras: bool = True,
) -> dict[str, Any]:
    """The whole pipeline into ``run_dir``; returns (and writes) ``results.json``'s content.

    ``extras``: besides the last epoch, also test ``best.pt`` (optimistic), the re-ranked
    figures and the untrained and pretrained-start baselines (``pipeline ablate`` skips them
    for seeds after the first).

    ``trial`` selects the RegDB split (one trained model per split, as the papers report).
    ``partners``: where a method that needs generated partners gets them: ``"gan"`` (stage
    1 + pair cache) or ``"gray"`` (the trivial partner, no stage 1: the ``tsme-gray``
    control). ``stage1_dir``: where stage 1 and the pair cache live (default ``run_dir``);
    runs that share it share one GAN and one cache (``pipeline ablate`` does, per seed).
    """
    from pipelines.data import load_splits
    from stage2_fusion.methods import METHODS

    t0 = time.perf_counter()
    method = method or cfg.fusion.method
    if method not in METHODS:
        raise UserError(f"unknown --method '{method}'; choose one of: {', '.join(METHODS)}")
    require_pretrained_choice(cfg, gan=METHODS[method][0].needs_partners and partners == "gan", vgg16=uses_pef(cfg, method))
    run_dir = Path(run_dir)
    splits = load_splits(for_method(cfg, method), dataset, data_root, cache_dir=cache_dir, trial=trial)  # bad data fails first
    cfg = prepare_config(cfg, method, device, partners=partners)  # input size (MSCMNet: 384 x 192), stand-ins built
    write_run_config(cfg, run_dir)
    info(f"data: {splits.index.name} at {splits.index.root}: {len(splits.train)} training images "
         f"({len(set(splits.train.pids.tolist()))} ids), {len(splits.test)} test images ({len(set(splits.test.pids.tolist()))} ids)")
    if partners not in ("gan", GRAY_PARTNERS):
        raise ValueError(f"partners must be 'gan' or '{GRAY_PARTNERS}', got {partners!r}")
    cache = None
    gray = partners == GRAY_PARTNERS and METHODS[method][0].needs_partners
    if gray:
        info(f"stage 1 (DSGAN) and pairs: not used, method {method} trains on gray partners (control)")
    elif METHODS[method][0].needs_partners:
        stage1 = Path(stage1_dir) if stage1_dir is not None else run_dir
        gan_path = stage_train_gan(cfg, splits, stage1, device)
        cache = stage_generate_pairs(gan_path, splits, stage1 / "pairs", device)
    else:
        info(f"stage 1 (DSGAN) and pairs: not needed by method {method}, skipped")
    reid = stage_train_fusion(cfg, method, splits, cache, run_dir, device, gray=gray)
    e = cfg.eval
    spec = make_protocol(e, splits.index.name, splits.index.root)
    feat = test_feature(cfg, method)
    results = stage_test(reid, splits, device, spec, feature=feat, flip=e.flip, batch_size=e.batch_size)
    if extras:
        attach_best_on_test(results, best_on_test(reid, splits, device, spec, feature=feat, flip=e.flip, batch_size=e.batch_size))
        reranked = stage_test(reid, splits, device, spec, feature=feat, flip=e.flip, batch_size=e.batch_size, rerank=DEFAULT_RERANK)
        results["with_reranking"] = {**{k: reranked[k] for k in METRIC_KEYS}, "params": DEFAULT_RERANK, "trials": reranked["trials"]}
        baseline = stage_test(reid, splits, device, spec, feature=feat, flip=e.flip, batch_size=e.batch_size, untrained=True)
        results["untrained_baseline"] = {k: baseline[k] for k in METRIC_KEYS}
        if uses_pretrained(cfg):
            start = stage_test(reid, splits, device, spec, feature=feat, flip=e.flip, batch_size=e.batch_size, untrained=True,
                               from_start=True)
            results["start_baseline"] = {k: start[k] for k in METRIC_KEYS}
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results["run_dir"] = str(run_dir)
    atomic_write_json(run_dir / "results.json", results)
    return results
