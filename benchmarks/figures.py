"""Every figure of the README and the documentation, made from results files by one command.

    python benchmarks/figures.py benchmarks/figures.toml            # all figures named there
    python benchmarks/figures.py benchmarks/figures.toml --only forest,curves

``benchmarks/figures.toml`` names the inputs (an ``ablation.json``, ``gan.pt`` files, run
directories, a ``reid.pt``) and the output folder (``docs/img``); a figure whose inputs are
not named is left as it is. Each figure says on itself what it was made from (profile,
steps, seeds, checkpoint), and ``docs/img/figures.json`` records, per PNG, its inputs with
their SHA-256 and the command: remake the figures when the results change, then commit the
PNGs with that file.

| figure | made from | what it shows |
|---|---|---|
| ``forest.png`` | ``ablation.json`` of ``pipeline ablate`` | each variant's paired difference to the baseline, 95 % interval, Rank-1 and mAP |
| ``partners.png`` | ``gan.pt`` per stage-1 variant + the demo's ``aligned_nir/`` | visible / aligned near-infrared twin / gray copy / each DSGAN's partner, on test identities |
| ``stage1-curves.png`` | stage-1 run directories (``metrics.jsonl``, ``probe_*``) | the partner probe's SSIM, raw-pixel Rank-1 and L1 by optimiser step, with the gray copy and the twin |
| ``reid-curves.png`` | stage-2 run directories (``metrics.jsonl``, ``config.toml``) | training accuracy and test Rank-1 by optimiser step |
| ``ranks.png`` | a ``reid.pt`` and its dataset | three infrared queries (the best, median and worst by AP of trial 0's queries at the 90th, 50th, 10th percentile) and their top-8 visible gallery images |
| ``front.png`` | a ``gan.pt``, a ``reid.pt`` and the demo | the README's figure: a visible test image, its near-infrared twin, its gray copy and DSGAN partner, and the median query's rank list |

Every PNG is checked to stay under :data:`MAX_BYTES` (300 KB). Nothing is trained; the
rank lists and the probe's baselines decode the test split through the array cache and run
the networks on the CPU (about a minute each on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

#: Largest PNG the repository takes (bytes).
MAX_BYTES = 300_000
#: Figures in the order they are made; ``--only`` picks among these names.
FIGURES = ("forest", "partners", "stage1-curves", "reid-curves", "ranks", "front")
#: The three queries a rank list shows: AP percentiles of trial 0's queries (best, median, worst).
RANK_PERCENTILES = (90, 50, 10)
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- writing


def save_figure(fig, out: Path) -> Path:
    """Write a matplotlib figure as an 8-bit palette PNG (photos and plots stay small) and close it.

    Raises:
        ValueError: the PNG is larger than :data:`MAX_BYTES`.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return save_png(Image.open(buffer), out)


def save_png(image: Image.Image, out: Path) -> Path:
    """Quantise ``image`` to 256 colours, write it as an optimised PNG, check its size.

    Raises:
        ValueError: the PNG is larger than :data:`MAX_BYTES` (name, size, limit).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{out} is {size} bytes, over the {MAX_BYTES}-byte limit: show fewer images or a smaller figure")
    return out


def sha256(path: Path) -> str:
    """SHA-256 of a file, or of every ``metrics.jsonl`` / ``config.toml`` / ``results.json`` of a run folder."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for name in ("metrics.jsonl", "config.toml", "results.json")
                                                  for p in path.glob(name))
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- forest plot


def rebase(report: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The report with every variant's paired differences taken against ``baseline`` instead,
    from the per-seed figures (:func:`pipelines.ablate.paired_difference`, seeds matched by number).

    Raises:
        ValueError: ``baseline`` is not a variant of the report.
    """
    from pipelines.ablate import REPORT_METRICS, paired_difference

    if baseline not in report["variants"]:
        raise ValueError(f"baseline {baseline!r} is not a variant of the ablation: {', '.join(report['variants'])}")
    base = {r["seed"]: r for r in report["variants"][baseline]["seeds"]}
    variants = {}
    for name, v in report["variants"].items():
        seeds = [r for r in v["seeds"] if r["seed"] in base]
        diff = None if name == baseline else {k: paired_difference([r[k] for r in seeds], [base[r["seed"]][k] for r in seeds])
                                              for _, k in REPORT_METRICS}
        variants[name] = {**v, "vs_baseline": diff}
    return {**report, "baseline": baseline, "variants": variants}


def forest_plot(report: dict[str, Any], out: Path) -> Path:
    """Each variant's paired difference to the baseline with its 95 % interval, Rank-1 and mAP.

    Args:
        report: the content of an ``ablation.json`` (:func:`pipelines.ablate.ablate`): it
            needs ``baseline``, ``dataset``, ``profile``, ``seeds`` and per variant
            ``vs_baseline[metric]`` with ``mean``, ``low``, ``high`` (``low``/``high`` None
            with one seed: then the point alone is drawn).
        out: the PNG to write.

    Raises:
        ValueError: a report with no variant besides the baseline.
    """
    base = report["baseline"]
    names = [n for n, v in report["variants"].items() if v.get("vs_baseline")]
    if not names:
        raise ValueError("the ablation report has no variant besides its baseline: nothing to plot")
    metrics = (("rank1", "Δ Rank-1"), ("mean_ap", "Δ mAP"))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 0.42 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, (key, label) in zip(axes, metrics):
        for yi, name in zip(y, names):
            d = report["variants"][name]["vs_baseline"][key]
            above = d["low"] is not None and d["low"] > 0
            below = d["high"] is not None and d["high"] < 0
            colour = "tab:green" if above else ("tab:red" if below else "0.35")
            if d["low"] is not None:
                ax.plot([d["low"], d["high"]], [yi, yi], color=colour, lw=2)
            ax.plot(d["mean"], yi, "o", color=colour, ms=5)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_xlabel(f"{label} vs {base} (points)")
        ax.grid(axis="x", color="0.9")
    axes[0].set_yticks(y, [f"{n}" for n in names])
    fig.suptitle(f"Ablation on {report['dataset']} ({report['profile']} profile), {report['seeds']} seeds: "
                 f"difference to {base}, paired 95 % t-interval over seeds\n"
                 "green: interval above 0, red: below 0, gray: contains 0", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- stage 1: partners


def demo_test_pairs(demo_root: Path, count: int) -> list[tuple[int, Path, Path]]:
    """``count`` test identities of the demo (never trained on), evenly spread over their
    sorted ids, each with its first visible image (sorted by path) and that image's aligned
    near-infrared twin: ``[(pid, visible, twin)]``.

    Raises:
        UserError: as :func:`common.datasets.load_dataset` and the demo's ``aligned_twins``.
    """
    from common.datasets import dataset_spec, load_dataset

    spec = dataset_spec("demo")
    index = load_dataset("demo", demo_root)
    pid_of = {s.path: s.pid for s in index.test}
    first: dict[int, tuple[Path, Path]] = {}
    for visible, twin in sorted(spec.aligned_twins(index.root, index.test)):
        first.setdefault(pid_of[str(visible)], (visible, twin))
    pids = sorted(first)
    chosen = [pids[i] for i in np.linspace(0, len(pids) - 1, min(count, len(pids))).round().astype(int)]
    return [(pid, *first[pid]) for pid in chosen]


def translate_visible(gan_path: Path, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The DSGAN's visible -> infrared partners of uint8 (N, H, W, 3) images (on the CPU, fp32),
    and what the checkpoint says of itself (its ``[gan]`` settings and selection)."""
    import torch

    from common.checkpoint import load_checkpoint
    from stage1_dsgan.generate import load_generators, make_translator

    gens = load_generators(gan_path, torch.device("cpu"))
    translate = make_translator(gens, torch.device("cpu"), amp=False)
    fake = translate(torch.from_numpy(np.ascontiguousarray(images)), torch.zeros(len(images), dtype=torch.bool)).numpy()
    state = load_checkpoint(gan_path, "dsgan")
    return fake, {"gan": state["gan"], "selection": state.get("selection", {}), "image_size": tuple(state["image_size"])}


def gray_copies(images: np.ndarray) -> np.ndarray:
    """The ``tsme-gray`` control's partners (BT.601 gray in three channels) of uint8 visible images."""
    import torch

    from pipelines.partners import gray_translate

    return gray_translate(torch.from_numpy(np.ascontiguousarray(images)), torch.zeros(len(images), dtype=torch.bool)).numpy()


def _describe_gan(name: str, info: dict[str, Any]) -> str:
    g = info["gan"]
    steps = g.get("epochs", 0) * g.get("steps_per_epoch", 0)
    return f"DSGAN {name}\ninput {g.get('input', 'gray')}, {steps} steps" if steps else f"DSGAN {name}\ninput {g.get('input', 'gray')}"


def partner_grid(gans: dict[str, Path], demo_root: Path, out: Path, *, identities: int = 6) -> Path:
    """Visible / aligned twin / gray copy / one partner per stage-1 variant, one row per
    demo test identity (:func:`demo_test_pairs`), at the first generator's image size.

    Args:
        gans: ``{variant name: gan.pt}``, in column order.
        demo_root: the demo dataset (with ``aligned_nir/``).
        identities: rows.
    """
    from common.data.images import read_image

    size = None
    columns: list[tuple[str, np.ndarray]] = []
    pairs = demo_test_pairs(demo_root, identities)
    for name, path in gans.items():
        if size is None:
            from common.checkpoint import load_checkpoint

            size = tuple(load_checkpoint(path, "dsgan")["image_size"])
            visible = np.stack([read_image(v, size) for _, v, _ in pairs])
            twins = np.stack([read_image(t, size) for _, _, t in pairs])
            columns = [("visible", visible), ("near-infrared twin\n(aligned_nir, truth)", twins),
                       ("gray copy\n(tsme-gray control)", gray_copies(visible))]
        fake, info = translate_visible(path, visible)
        columns.append((_describe_gan(name, info), fake))
    rows = len(pairs)
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.25 * len(columns) + 0.6, 2.0 * rows + 0.9), squeeze=False)
    for c, (title, images) in enumerate(columns):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(images[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7.5)
            if c == 0:
                ax.set_ylabel(f"id {pairs[r][0]}", fontsize=8)
    fig.suptitle("Demo test identities (never trained on): the visible image, the same scene seen by the\n"
                 "near-infrared camera, and the partners stage 2 would pair it with", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- curves


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (:class:`common.runlog.RunLog`), in file order."""
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def probe_baselines(demo_root: Path, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """The partner probe's scores of the gray copy and of the twins on the demo's test
    identities at ``size`` (:meth:`stage1_dsgan.evaluate.PartnerProbe.baselines`)."""
    from pipelines.data import load_splits
    from pipelines.stages import partner_probe
    from stage2_fusion.methods import load_config

    splits = load_splits(load_config("demo"), "demo", demo_root, size=size)
    return partner_probe(splits).baselines()


def stage1_curves(runs: dict[str, Path], out: Path, *, baselines: dict[str, dict[str, float]] | None = None,
                  title: str = "") -> Path:
    """The partner probe logged while stage 1 trains (``probe_ssim``, ``probe_partner_rank1``,
    ``probe_l1`` records of each run's ``metrics.jsonl``) by optimiser step; the gray copy's
    and the twin's scores as horizontal lines when ``baselines`` is given.

    Raises:
        ValueError: a run without probe records.
    """
    panels = (("ssim", "SSIM to the twin ↑"), ("partner_rank1", "raw-pixel Rank-1 of the partners ↑"), ("l1", "L1 to the twin ↓"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for name, run in runs.items():
        records = [r for r in read_metrics(run) if f"probe_{panels[0][0]}" in r]
        if not records:
            raise ValueError(f"{run}/metrics.jsonl has no probe_* records (stage 1 without the partner probe)")
        steps = [r["step"] for r in records]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(steps, [r[f"probe_{key}"] for r in records], marker=".", label=name)
    for ax, (key, label) in zip(axes, panels):
        if baselines:
            for what, style in (("gray", "--"), ("twin", ":")):
                ax.axhline(baselines[what][key], color="0.4", ls=style, lw=1,
                           label="gray copy" if what == "gray" else "twin (oracle)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.grid(color="0.9")
    axes[1].legend(fontsize=7)
    fig.suptitle("Stage 1 on the demo: partners of test identities (never trained on) against their near-infrared twins"
                 + (f"\n{title}" if title else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


def _run_label(name: str, run: Path) -> tuple[str, int]:
    """A stage-2 run's legend label and its optimiser steps per logged epoch (from its config.toml; 0 if unknown)."""
    config = tomllib.loads((Path(run) / "config.toml").read_text())
    records = [r for r in read_metrics(run) if r.get("stage") == "fusion"]
    method = records[0].get("method", name) if records else name
    recipe = config.get("fusion", {}).get("recipes", {}).get(method, {})
    per_epoch = int(recipe.get("steps_per_epoch", 0) or 0)
    schedule = f"{recipe['epochs']} epochs x {per_epoch} steps" if per_epoch and "epochs" in recipe else f"{config.get('profile', '?')} profile"
    return f"{name} ({schedule})", per_epoch


def reid_curves(runs: dict[str, Path], out: Path, *, title: str = "") -> Path:
    """Training accuracy and test Rank-1 of stage-2 runs by optimiser step (epoch x the
    recipe's ``steps_per_epoch``; by epoch when the config does not say).

    Raises:
        ValueError: a run without stage-2 records.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    by_steps = True
    for name, run in runs.items():
        records = [r for r in read_metrics(run) if r.get("stage") == "fusion"]
        if not records:
            raise ValueError(f"{run}/metrics.jsonl has no stage-2 (fusion) records")
        label, per_epoch = _run_label(name, run)
        by_steps &= per_epoch > 0
        x = [r["epoch"] * (per_epoch or 1) for r in records]
        axes[0].plot(x, [r["train_acc"] for r in records], marker=".", label=label)
        evaluated = [(xi, r["eval_rank1"]) for xi, r in zip(x, records) if "eval_rank1" in r]
        if evaluated:
            axes[1].plot(*zip(*evaluated), marker=".", label=label)
    for ax, title in zip(axes, ("training accuracy (identity classification)", "test Rank-1 (%) at each evaluation")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimiser step" if by_steps else "epoch")
        ax.grid(color="0.9")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Stage 2 training curves{': ' + title if title else ''} (each run's metrics.jsonl)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- rank lists


def rank_rows(checkpoint: Path, dataset: str, data_root: Path | None, *, top: int = 8,
              percentiles: tuple[int, ...] = RANK_PERCENTILES) -> tuple[list, dict[str, Any]]:
    """Trial 0 of the checkpoint's test protocol, ranked as :func:`pipelines.insight.show_ranks`
    ranks it, and the queries at the given AP percentiles (highest first).

    Returns:
        (``[pipelines.rank_grid.RankRow]``, ``{"protocol", "method", "rows": [{"pid", "cam", "ap",
        "percentile"}], "query_images": [index into the test split]}``).
    """
    import torch

    from pipelines.commands import checkpoint_splits
    from pipelines.insight import rank_trial0
    from pipelines.rank_grid import RankRow

    _, splits, _ = checkpoint_splits(checkpoint, dataset, data_root)
    ranking = rank_trial0(checkpoint, splits, torch.device("cpu"))
    spec, meta, test, trial, ap, masked = ranking.spec, ranking.meta, ranking.test, ranking.trial, ranking.ap, ranking.masked
    q_pids, g_pids = ranking.q_pids, ranking.g_pids
    valid = np.flatnonzero(~np.isnan(ap))
    order = valid[np.argsort(ap[valid], kind="stable")]  # lowest AP first
    rows, report = [], {"protocol": spec.describe(), "method": meta["method"], "rows": [], "query_images": []}
    for pct in percentiles:
        qi = order[min(len(order) - 1, int(round(pct / 100 * (len(order) - 1))))]
        ranked = np.argsort(masked[qi], kind="stable")[:top]
        ranked = ranked[np.isfinite(masked[qi, ranked])]  # items the protocol removes for this query are not ranked
        g_index = trial.gallery[ranked]
        rows.append(RankRow(query=np.asarray(test.images[trial.query[qi]]),
                            query_text=f"id {q_pids[qi]} cam {test.cams[trial.query[qi]]}\nAP {ap[qi]:.2f} p{pct}",
                            gallery=np.stack([np.asarray(test.images[i]) for i in g_index]),
                            correct=g_pids[ranked] == q_pids[qi],
                            captions=[f"id {p}\nd {d:.2f}" for p, d in zip(g_pids[ranked], masked[qi, ranked])]))
        report["rows"].append({"pid": int(q_pids[qi]), "cam": int(test.cams[trial.query[qi]]), "ap": float(ap[qi]), "percentile": pct})
        report["query_images"].append(int(trial.query[qi]))
    k = min(len(r.gallery) for r in rows)  # one grid: every row as long as the shortest
    rows = [RankRow(r.query, r.query_text, r.gallery[:k], r.correct[:k], r.captions[:k]) for r in rows]
    return rows, report


def rank_list(checkpoint: Path, dataset: str, data_root: Path | None, out: Path) -> tuple[Path, dict[str, Any]]:
    """Three queries (AP percentiles 90 / 50 / 10 of trial 0) and their top-8, as a PNG."""
    from pipelines.rank_grid import render_rank_grid

    rows, report = rank_rows(checkpoint, dataset, data_root)
    image = render_rank_grid(rows, thumb_height=96, title=f"{report['method']}, {dataset}: infrared queries at AP percentiles "
                                                          f"{'/'.join(map(str, RANK_PERCENTILES))} of trial 0; green = same id")
    return save_png(Image.fromarray(image), out), report


def front_figure(gan: Path, checkpoint: Path, demo_root: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """The README's figure: for the median query of trial 0 (by AP) on the demo, a visible
    image of the same person, its near-infrared twin, its gray copy and DSGAN partner
    (``gan``), and the query's rank list (``checkpoint``)."""
    from common.data.images import read_image
    from common.datasets import dataset_spec, load_dataset
    from pipelines.rank_grid import render_rank_grid

    rows, report = rank_rows(checkpoint, "demo", demo_root, percentiles=(50,))
    pid = report["rows"][0]["pid"]
    index = load_dataset("demo", demo_root)
    mine = [s for s in index.test if s.pid == pid]
    visible, twin = sorted(dataset_spec("demo").aligned_twins(index.root, mine))[0]
    size = rows[0].query.shape[:2]
    images = np.stack([read_image(visible, size), read_image(twin, size)])
    fake, info = translate_visible(gan, images[:1])
    panels = [("visible\n(day camera)", images[0]), ("near-infrared\ntwin (truth)", images[1]),
              ("gray\ncopy", gray_copies(images[:1])[0]), (_describe_gan("partner", info).replace(", ", "\n"), fake[0])]
    ranks = render_rank_grid(rows, thumb_height=96, title="")
    fig = plt.figure(figsize=(9.6, 3.3))
    grid = fig.add_gridspec(1, 2, width_ratios=[1.45, 3.2], wspace=0.04)
    left = grid[0].subgridspec(1, 4, wspace=0.12)
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(left[i])
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=6.5)
        ax.axis("off")
    ax = fig.add_subplot(grid[1])
    ax.imshow(ranks, interpolation="nearest")
    ax.set_title(f"stage 2 ({report['method']}): an infrared query of the same person and its top-8 visible gallery images\n"
                 "(green = same person; the median query of trial 0 by AP)", fontsize=7.5)
    ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.80, bottom=0.02)
    report["person"] = pid
    return save_figure(fig, out), report


# ----------------------------------------------------------------------------- main


def _path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO / path


def make_figures(config: dict[str, Any], only: set[str] | None = None) -> dict[str, Any]:
    """Make every figure ``config`` names inputs for (or those in ``only``) into its ``out``
    folder; update ``figures.json`` there. Returns that manifest.

    Raises:
        ValueError: an unknown figure in ``only``; a PNG over :data:`MAX_BYTES`.
    """
    if only and only - set(FIGURES):
        raise ValueError(f"--only {','.join(sorted(only))}: figures are {', '.join(FIGURES)}")
    out = _path(config.get("out", "docs/img"))
    manifest_path = out / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    demo_root = _path(config["demo_root"]) if "demo_root" in config else None
    wanted = [f for f in FIGURES if (only is None or f in only) and f.replace("-", "_") in config]
    for figure in wanted:
        section = config[figure.replace("-", "_")]
        png = out / f"{figure}.png"
        inputs: dict[str, Any]
        details: dict[str, Any] = {}
        if figure == "forest":
            report = json.loads(_path(section["ablation"]).read_text())
            if "baseline" in section:
                report = rebase(report, section["baseline"])
            forest_plot(report, png)
            inputs = {"ablation": str(section["ablation"])}
            details = {"baseline": report["baseline"]}
        elif figure == "partners":
            gans = {k: _path(v) for k, v in section["gans"].items()}
            partner_grid(gans, demo_root, png, identities=int(section.get("identities", 6)))
            inputs = {f"gan {k}": v for k, v in section["gans"].items()}
        elif figure == "stage1-curves":
            runs = {k: _path(v) for k, v in section["runs"].items()}
            baselines = None
            if demo_root is not None and section.get("baselines", True):
                size = tuple(section.get("size", (96, 48)))
                baselines = probe_baselines(demo_root, size)
                details["baselines"] = baselines
            stage1_curves(runs, png, baselines=baselines, title=section.get("title", ""))
            inputs = {f"run {k}": v for k, v in section["runs"].items()}
        elif figure == "reid-curves":
            reid_curves({k: _path(v) for k, v in section["runs"].items()}, png, title=section.get("title", ""))
            inputs = {f"run {k}": v for k, v in section["runs"].items()}
        elif figure == "ranks":
            root = _path(section["data_root"]) if "data_root" in section else demo_root
            _, details = rank_list(_path(section["checkpoint"]), section.get("dataset", "demo"), root, png)
            inputs = {"checkpoint": section["checkpoint"]}
        else:  # front
            _, details = front_figure(_path(section["gan"]), _path(section["checkpoint"]), demo_root, png)
            inputs = {"gan": section["gan"], "checkpoint": section["checkpoint"]}
        manifest[png.name] = {"inputs": {k: {"path": str(v), "sha256": sha256(_path(str(v)))} for k, v in inputs.items()},
                              "bytes": png.stat().st_size, **({"details": details} if details else {})}
        print(f"{png.relative_to(REPO) if png.is_relative_to(REPO) else png}: {png.stat().st_size / 1000:.0f} KB")
    manifest["_command"] = "python benchmarks/figures.py benchmarks/figures.toml"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="TOML naming the inputs (benchmarks/figures.toml)")
    parser.add_argument("--only", default=None, help=f"comma-separated figures among: {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    only = {f.strip() for f in args.only.split(",") if f.strip()} if args.only else None
    make_figures(tomllib.loads(args.config.read_text()), only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
