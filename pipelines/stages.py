"""The pipeline's stages: data -> DSGAN -> partner cache -> re-ID training -> test.

Each function runs one stage into a run directory, skipping it when its output is complete
and current; :mod:`pipelines.commands` (one function per CLI command) and
:func:`pipelines.run_all.run_all` call them::

    checkpoints/<run>/config.toml            the resolved config (frozen copy)
    checkpoints/<run>/gan/{last,gan}.pt      stage 1
    checkpoints/<run>/partner_cache/         the partner cache (common.data.partner_cache)
    checkpoints/<run>/fusion/{last,best,reid}.pt   stage 2
    checkpoints/<run>/tb/, metrics.jsonl     TensorBoard events and per-epoch records
    checkpoints/<run>/results.json           test metrics (trained and untrained)

An interrupted stage resumes from its ``last.pt`` (or finished shards); an output made with
other settings is never overwritten (the error says to use another run directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write_text
from common.checkpoint import file_sha256
from common.config import Config, config_section_dict, dump_config, for_method, require_pretrained_choice, test_feature
from common.data.partner_cache import MANIFEST, PartnerCache, open_partner_cache
from common.datasets import DatasetSpec
from common.errors import UserError
from common.evaluation.protocols import Family, ProtocolSpec
from common.runlog import info
from common.weights import WeightsKind
from pipelines.data import Splits
from pipelines.partners import PartnerKind, PartnerSource
from pipelines.results import BEST_ON_TEST, LAST_EPOCH
from stage2_fusion.edges import edge_summary, uses_pef
from stage2_fusion.methods import method_spec

#: The run directory's folder of the partner cache.
PARTNER_CACHE_DIR = "partner_cache"


def trains_stage1(method: str, partners: PartnerKind | None) -> bool:
    """Whether a run of ``method`` trains stage 1: the method trains on partners and they come
    from a partner cache that the run makes."""
    return method_spec(method).needs_partners and partners is PartnerKind.CACHE


def prepare_config(cfg: Config, method: str, device: torch.device, *, stage1: bool) -> Config:
    """The configuration a run of ``method`` trains with: the method's input size
    (:func:`common.config.for_method`) and every ``"demo-standin"`` it needs replaced by the
    stand-in's file, built first when missing (:func:`common.demo.standin.resolve_standins`):
    the DSGAN encoder's when the run trains stage 1 (``stage1``), the re-ID body's, and
    VGG16 when the method uses MSO's PEF loss.

    Raises:
        UserError: an unknown method, or a recipe missing for it.
    """
    from common.demo.standin import resolve_standins

    method_spec(method)
    cfg = for_method(cfg, method)
    return resolve_standins(cfg, device, gan=stage1, fusion=True, vgg16=uses_pef(cfg.fusion.recipe(method)))


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


def make_protocol(cfg_eval, spec: DatasetSpec, data_root: Path, **overrides: Any) -> ProtocolSpec:
    """The test protocol of a dataset from the eval config, with flag overrides (None: keep).

    The dataset's family decides what applies: SYSU-MM01's queries are infrared and it
    alone has the official galleries; RegDB has one trial per trained model (its split).

    Raises:
        UserError: a dataset without a re-ID test; the official protocol without a
            ``rand_perm_cam.mat`` to read, or for another family; an invalid combination.
    """
    if not spec.has_test:
        raise UserError(f"--dataset {spec.name} has no re-ID test protocol")
    e = {**config_section_dict(cfg_eval), **{k: v for k, v in overrides.items() if v is not None}}
    family: Family = spec.protocol
    perm_file = None
    if e["protocol"] == "official":
        if family is not Family.SYSU_MM01:
            raise UserError(f"--protocol official exists for SYSU-MM01 only, not {spec.name}")
        perm = Path(e["perm_file"]) if e["perm_file"] else Path(data_root) / "exp" / "rand_perm_cam.mat"
        if not perm.is_file():
            raise UserError(
                f"the official SYSU-MM01 protocol reads rand_perm_cam.mat, not found at {perm}; pass --perm-file "
                "(it ships with the official evaluation code, wuancong/SYSU-MM01 evaluation/data_split/)"
            )
        perm_file = str(perm)
    direction = e["direction"] if len(family.directions) > 1 else family.directions[0]
    try:
        return ProtocolSpec(family, mode=e["mode"], shots=e["shots"], direction=direction, protocol=e["protocol"],
                            num_trials=e["trials"], perm_file=perm_file, title=spec.title)
    except ValueError as exc:
        raise UserError(f"{exc}; check --mode, --shots, --direction and --protocol for --dataset {spec.name}") from None


def file_numbers(samples) -> np.ndarray:
    """The number in each file name (SYSU-MM01 ``0007.jpg`` -> 7; -1 where there is none)."""
    out = np.full(len(samples), -1, dtype=np.int64)
    for i, sample in enumerate(samples):
        stem = Path(sample.path).stem
        if stem.isdigit():
            out[i] = int(stem)
    return out


def partner_probe(splits: Splits):
    """What stage 1's partners carry, measured while it trains: the test identities (never
    trained on) of a dataset that renders every visible image's infrared twin (the demo's
    ``aligned_nir/``; :attr:`common.datasets.DatasetSpec.aligned_twins`), as a
    :class:`stage1_dsgan.evaluate.PartnerProbe`; None for any other dataset or without a
    decoded test split.

    Raises:
        UserError: a demo without twins (made before generator version 3).
    """
    from common.data.images import read_image
    from stage1_dsgan.evaluate import PartnerProbe

    if splits.spec.aligned_twins is None or splits.test is None:
        return None
    test = splits.test
    size = tuple(test.images.shape[1:3])
    vis, ir = np.flatnonzero(~test.is_ir), np.flatnonzero(test.is_ir)
    twins = [twin for _, twin in splits.spec.aligned_twins(splits.index.root, splits.index.test)]  # visible samples, in order
    return PartnerProbe(np.asarray(test.images[vis]), np.stack([read_image(t, size) for t in twins]), test.pids[vis],
                        np.asarray(test.images[ir]), test.pids[ir])


def train_gan_stage(cfg: Config, splits: Splits, run_dir: Path, device: torch.device) -> Path:
    """Stage 1 into ``<run>/gan``; returns ``gan.pt``. The caller checked the weights choice
    (:func:`common.config.require_pretrained_choice`) once. With ``gan.monitor_every`` the
    generator is scored every so many steps on :func:`partner_probe` (when the dataset has one)."""
    from stage1_dsgan.train import train_gan

    probe = partner_probe(splits) if cfg.gan.monitor_every else None
    return train_gan(cfg, splits.train, Path(run_dir) / "gan", device, dataset=splits.index.name, aligned=splits.spec.aligned,
                     probe=probe)


def partner_cache_stage(gan_path: Path, splits: Splits, out: Path, device: torch.device, *, shard_size: int = 1024) -> PartnerCache:
    """The partner cache of the training split (skipped when a current one exists); returns it opened."""
    from stage1_dsgan.generate import generate_pairs

    out = Path(out)
    expected = dict(dataset=splits.index.name, data_fingerprint=splits.train.fingerprint,
                    image_size=tuple(splits.train.images.shape[1:3]), count=len(splits.train), generator_sha256=file_sha256(gan_path))
    if (out / MANIFEST).exists():
        cache = open_partner_cache(out, **expected)
        info(f"generate-pairs: {out} is complete and current, skipped")
        return cache
    generate_pairs(gan_path, splits.train, out, device, dataset=splits.index.name, data_root=splits.index.root, shard_size=shard_size)
    return open_partner_cache(out, **expected)


def train_reid_stage(
    cfg: Config,
    method: str,
    splits: Splits,
    source: PartnerSource | None,
    run_dir: Path,
    device: torch.device,
    *,
    cache: PartnerCache | None = None,
    options=None,
) -> Path:
    """Stage 2 into ``<run>/fusion``; returns ``reid.pt``. The caller resolved the config
    (:func:`prepare_config`) and checked the weights choice once.

    Args:
        source: the partner source (None for a method without partners; ignored by one).
        cache: the opened partner cache of a ``cache`` source.
        options: :class:`stage2_fusion.train.TrainOptions` (workers, compile, SyncBN, ranks).

    Raises:
        UserError: a method that needs partners without a source; a generator of another size.
    """
    from common.demo.standin import describe_weights
    from stage2_fusion.evaluate import evaluate_protocol
    from stage2_fusion.train import TrainOptions, train_fusion

    options = options or TrainOptions()
    spec = method_spec(method)
    recipe = cfg.fusion.recipe(method)
    if uses_pef(recipe) and cfg.fusion.vgg16.kind is WeightsKind.NONE:
        from common.nets.vgg import VGG16_URL

        info(f"stage 2 ({method}): MSO's PEF loss compares VGG16 features, and no ImageNet VGG16 was given (--vgg16): VGG16 "
             f"starts from random initialisation, which is not MSO's setting; for MSO's, download {VGG16_URL} and pass "
             "--vgg16 PATH")
    meta: dict[str, Any] = {"dataset": splits.index.name, "edge": edge_summary(recipe, cfg.fusion.vgg16),
                            "pretrained_weights": describe_weights(cfg)}
    if splits.spec.splits > 1:  # pipeline test checks it: another split's test ids are training ids here
        meta["split"] = splits.split
    partner_cache = translate = None
    if spec.needs_partners:
        if source is None:
            raise UserError(f"method {method} trains on partners: pass --partners CACHE (make one with pipeline generate-pairs), "
                            "--partners on-the-fly --gan-checkpoint GAN.pt, or --partners gray")
        partner_cache, translate = source.training_inputs(device, image_size=(cfg.data.height, cfg.data.width), amp=cfg.gan.amp, cache=cache)
        meta["partners"] = source.record()
    evaluate = None
    if recipe.eval_every and splits.test is not None and options.dist.is_main:
        test_partners = source.test_partners(len(splits.test), device) if spec.needs_partners else None
        protocol = make_protocol(cfg.eval, splits.spec, splits.index.root, trials=1)
        numbers = file_numbers(splits.index.test) if protocol.protocol == "official" else None

        def evaluate(model):
            return evaluate_protocol(model, splits.test, device, protocol, partners=test_partners, file_numbers=numbers,
                                     feature=test_feature(cfg, method), batch_size=cfg.eval.batch_size, amp=cfg.eval.amp,
                                     show_progress=False, return_features=True)

    return train_fusion(cfg, method, splits.train, Path(run_dir) / "fusion", device, partner_cache=partner_cache, translate=translate,
                        partner_id=source.identity if spec.needs_partners else None, evaluate=evaluate, meta=meta, options=options)


def test_stage(
    checkpoint: Path,
    splits: Splits,
    device: torch.device,
    protocol: ProtocolSpec,
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
    pretrained weights its training started from).

    Raises:
        UserError: a method that needs partners whose generator is missing or changed.
    """
    from stage2_fusion.evaluate import evaluate_protocol, load_reid_model

    model, meta, cfg = load_reid_model(checkpoint, device, untrained=untrained, from_start=from_start)
    selection = BEST_ON_TEST if Path(checkpoint).name == "best.pt" else LAST_EPOCH
    if tuple(meta["image_size"]) != tuple(splits.test.images.shape[1:3]):
        raise ValueError("test split decoded at another size than the model's")  # callers decode at meta size
    partners = None
    if method_spec(meta["method"]).needs_partners:
        source = PartnerSource.from_record(meta)
        beside = Path(checkpoint).resolve().parent.parent / "gan" / "gan.pt"
        partners = source.test_partners(len(splits.test), device, override=gan_checkpoint, beside=beside, model=str(checkpoint))
    numbers = file_numbers(splits.index.test) if protocol.protocol == "official" else None
    t0 = time.perf_counter()
    summary = evaluate_protocol(model, splits.test, device, protocol, partners=partners, file_numbers=numbers,
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
        "edge": edge_summary(cfg.fusion.recipes.get(meta["method"]), cfg.fusion.vgg16),
        "pretrained_weights": meta.get("pretrained_weights"),
        "epoch": None if untrained else meta.get("epoch"),
        "selection": ("pretrained start" if from_start else "untrained") if untrained else selection,
        "device": str(device),
        "test_seconds": round(time.perf_counter() - t0, 2),
        **({"split": splits.split} if splits.spec.splits > 1 else {}),
        **summary,
    }


def best_on_test(checkpoint: Path, splits: Splits, device: torch.device, protocol: ProtocolSpec, **kwargs: Any) -> dict[str, Any] | None:
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
    return test_stage(best, splits, device, protocol, **kwargs)


def check_weights_choice(cfg: Config, method: str, *, stage1: bool) -> None:
    """The one check that a run has chosen its ImageNet weights (paper profile: "required"):
    the DSGAN encoder's when the run trains stage 1, the re-ID body's, VGG16's when the
    method uses PEF.

    Raises:
        UserError: naming the key and both ways out.
    """
    require_pretrained_choice(cfg, gan=stage1, vgg16=uses_pef(cfg.fusion.recipe(method)))
