"""Stage 2 evaluation: extract test features once, then score every protocol trial.

Features are extracted for the union of all trials' query and gallery images (each image
once), in batches of one modality, with the generated partner of each image when the
method needs one (TSME translates test images too). A trial's score matrix is the inner
product of L2-normalised features (cosine similarity); the ranking metrics take its
negative as the distance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from common.data.array_cache import ArraySplit
from common.data.augment import imagenet_normalize, to_float_images
from common.errors import UserError
from common.evaluation.metrics import evaluate_ranking, summarize
from common.evaluation.protocols import ProtocolSpec, protocol_trials
from common.evaluation.reranking import k_reciprocal_rerank
from common.runlog import progress_bar
from common.runtime import autocast

# partners(indices, images uint8 (B, H, W, 3), is_ir bool (B,)) -> uint8 (B, H, W, 3)
PartnerSource = Callable[[np.ndarray, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    split: ArraySplit,
    indices: np.ndarray,
    device: torch.device,
    *,
    partners: PartnerSource | None = None,
    feature: str = "post",
    flip: bool = False,
    batch_size: int = 128,
    amp: bool = False,
    show_progress: bool = True,
) -> np.ndarray:
    """L2-normalised features of ``split`` images ``indices``.

    Args:
        model: a stage-2 method model (``extract`` method); put in eval mode here.
        split: the decoded split.
        indices: int64 (N,) rows of ``split`` to embed.
        device: where the model runs.
        partners: source of partners, for a method that needs them
            (:attr:`stage2_fusion.method_spec.MethodSpec.needs_partners`; the caller,
            which knows the method, passes them); None: the model takes none.
        feature: "pre" or "post" BNNeck feature.
        flip: average with the horizontally flipped image's feature (and partner's).
        batch_size: images per forward pass.
        amp: extract under bf16 autocast on CUDA (``eval.amp``); False (default): float32,
            as the references' test scripts (MSCMNet trains in fp16 but tests in fp32).

    Returns:
        float32 (N, D) array, rows L2-normalised, in the order of ``indices``.

    """
    needs_partners = partners is not None
    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    out = None
    modality_ir = split.is_ir[indices]
    with progress_bar(len(indices), "extracting features", unit="img", enabled=show_progress) as advance:
        for ir_flag in (False, True):
            rows = np.flatnonzero(modality_ir == ir_flag)
            name = "ir" if ir_flag else "vis"
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                idx = indices[chunk]
                order = np.argsort(idx)  # memmap reads in file order
                images_u8 = torch.from_numpy(np.ascontiguousarray(split.images[idx[order]]))
                x = imagenet_normalize(to_float_images(images_u8, device))
                inputs = {name: x}
                pair = None
                if needs_partners:
                    p_u8 = partners(idx[order], images_u8, torch.full((len(idx),), ir_flag))
                    pair = {name: imagenet_normalize(to_float_images(p_u8, device))}
                with autocast(device, amp):
                    feats = model.extract(inputs, pair, feature).float()
                    if flip:
                        flipped_pair = None if pair is None else {name: pair[name].flip(-1)}
                        feats = torch.nn.functional.normalize(feats + model.extract({name: x.flip(-1)}, flipped_pair, feature).float(), dim=1)
                feats = feats.cpu().numpy()
                if out is None:
                    out = np.empty((len(indices), feats.shape[1]), dtype=np.float32)
                out[chunk[order]] = feats
                advance(len(chunk))
    return out


def evaluate_protocol(
    model: nn.Module,
    test: ArraySplit,
    device: torch.device,
    spec: ProtocolSpec,
    *,
    partners: PartnerSource | None = None,
    file_numbers: np.ndarray | None = None,
    feature: str = "post",
    flip: bool = False,
    batch_size: int = 128,
    amp: bool = False,
    show_progress: bool = True,
    rerank: dict[str, float] | None = None,
    return_features: bool = False,
) -> dict[str, Any]:
    """A dataset's standard test protocol on its test split.

    The protocol (:class:`common.evaluation.protocols.ProtocolSpec`: SYSU-MM01 all/indoor search,
    single/multi-shot, AGW random or official galleries; RegDB or LLCM direction) gives the
    trials' query and gallery indices and ignore masks; each trial is scored with
    :func:`common.evaluation.metrics.evaluate_ranking` (repeated gallery identities collapsed in the
    CMC where the dataset's reference code does).

    Args:
        file_numbers: int64 (N,) number in each test file name; needed by the SYSU-MM01
            official protocol only.
        rerank: ``{"k1", "k2", "lambda_value"}`` to re-rank each trial with k-reciprocal
            encoding (:func:`common.evaluation.reranking.k_reciprocal_rerank`; Zhong et al., CVPR 2017)
            on the Euclidean distances of the L2-normalised features (query-gallery,
            query-query and gallery-gallery of the trial, as the authors' code takes them);
            the trial's ignore mask applies to the re-ranked distances. None: plain cosine.
        amp: see :func:`extract_features` (False: float32 features).

    Returns:
        :func:`common.evaluation.metrics.summarize` of the trials (percent, mean/std, per trial) plus
        ``protocol`` (its description), ``dataset``, ``mode``, ``shots``, ``direction``,
        ``num_trials``, ``num_query``, ``feature``, ``flip``, ``reranked`` (the
        re-ranking parameters, or False); with ``return_features`` also ``features``:
        ``{"features": (N, D) float32, "pids": (N,), "is_ir": (N,)}`` of every image the
        trials used (for TensorBoard's projector and distance histograms).

    Raises:
        UserError: the model produces NaN/inf features (diverged training).
    """
    trial_list = protocol_trials(spec, test.pids, test.cams, test.is_ir, file_numbers)
    needed = np.unique(np.concatenate([t.query for t in trial_list] + [t.gallery for t in trial_list]))
    feats = extract_features(model, test, needed, device, partners=partners, feature=feature, flip=flip,
                             batch_size=batch_size, amp=amp, show_progress=show_progress)
    if not np.isfinite(feats).all():
        raise UserError("the model produces NaN/inf features on test images: its training diverged; retrain with a lower learning rate")
    row_of = np.full(len(test), -1, dtype=np.int64)
    row_of[needed] = np.arange(len(needed))
    collapse = spec.family.collapses_ids
    results = []
    for trial in trial_list:
        q, g = feats[row_of[trial.query]], feats[row_of[trial.gallery]]
        dist = -(q @ g.T)  # (Q, G), lower = more similar (cosine of L2-normalised features)
        if rerank is not None:
            dist = k_reciprocal_rerank(_euclidean(q, g), _euclidean(q, q), _euclidean(g, g),
                                       int(rerank["k1"]), int(rerank["k2"]), float(rerank["lambda_value"]),
                                       device=device if device.type == "cuda" else None)
        results.append(evaluate_ranking(dist, test.pids[trial.query], test.pids[trial.gallery], ignore=trial.ignore,
                                        collapse_repeated_ids=collapse))
    summary = summarize(results)
    summary.update({
        "protocol": spec.describe(), "mode": spec.mode, "shots": spec.shots,
        "direction": spec.direction, "num_trials": len(trial_list), "num_query": int(len(trial_list[0].query)),
        "feature": feature, "flip": flip, "reranked": dict(rerank) if rerank is not None else False,
    })
    if return_features:
        summary["features"] = {"features": feats, "pids": test.pids[needed], "is_ir": test.is_ir[needed]}
    return summary


def pair_distances(features: np.ndarray, pids: np.ndarray, is_ir: np.ndarray, *, max_items: int = 600,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Cosine distances of positive (same identity) and negative pairs, per modality pair.

    For the distance histograms of TensorBoard: a model that bridges the modality gap
    separates ``pos vis-ir`` from ``neg vis-ir`` as well as it does within a modality.

    Args:
        features: (N, D) float L2-normalised features; pids: (N,) int; is_ir: (N,) bool.
        max_items: at most this many images are used (a seeded random subset).

    Returns:
        ``{"pos vis-vis", "neg vis-vis", "pos ir-ir", "neg ir-ir", "pos vis-ir", "neg vis-ir"}``
        -> float64 1-D arrays of ``1 - cos`` over the distinct pairs (i < j within a modality).
    """
    n = len(features)
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, max_items), replace=False))
    f, p, ir = features[keep].astype(np.float64), pids[keep], is_ir[keep]
    dist = 1.0 - f @ f.T
    same = p[:, None] == p[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    out = {}
    for name, rows, cols in (("vis-vis", ~ir, ~ir), ("ir-ir", ir, ir), ("vis-ir", ~ir, ir)):
        pair = rows[:, None] & cols[None, :]
        if name != "vis-ir":
            pair &= upper
        out[f"pos {name}"] = dist[pair & same]
        out[f"neg {name}"] = dist[pair & ~same]
    return out


def _euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances of L2-normalised rows: sqrt(max(2 - 2 a.b, 0)), (len a, len b) float32."""
    return np.sqrt(np.clip(2.0 - 2.0 * (a @ b.T), 0.0, None)).astype(np.float32)


def load_reid_model(path, device: torch.device, *, untrained: bool = False, from_start: bool = False):
    """Rebuild a stage-2 model from ``reid.pt`` / ``best.pt`` / ``last.pt``.

    Args:
        path: the checkpoint.
        device: where to put the model.
        untrained: build the same architecture with its seeded initial weights instead of
            the trained ones (the "untrained network" baseline).
        from_start: with ``untrained``, load the pretrained weights the training started
            from (ImageNet or the demo's stand-in) instead of a random initialisation: the
            "pretrained start" baseline; the files named in the checkpoint's config must exist.

    Returns:
        (model in eval mode, checkpoint dict without the large state entries, Config).

    Raises:
        UserError: missing file or not a re-ID checkpoint; ``from_start`` with a pretrained
            file that is no longer there.
    """
    from common.checkpoint import load_checkpoint
    from common.config import for_inference
    from common.runtime import seed_everything
    from stage2_fusion.methods import build_method, config_from_checkpoint

    state = load_checkpoint(path, "reid")
    cfg = config_from_checkpoint(state["config"])
    seed_everything(cfg.fusion.seed)
    model, _ = build_method(state["method"], cfg if (untrained and from_start) else for_inference(cfg), state["num_classes"])
    if not untrained:
        model.load_state_dict(state["model"])
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "scaler", "rng")}
    return model, meta, cfg
