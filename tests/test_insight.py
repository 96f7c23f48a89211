"""Looking at a result: show-ranks grids, compare tables, TensorBoard projector and
distance histograms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stage2_fusion.methods import load_config
from pipelines.rank_grid import GREEN, RED, RankRow, render_rank_grid
from pipelines.cli import app
from pipelines.run_all import run_all
from stage2_fusion.evaluate import pair_distances
from tests.conftest import TINY_OVERRIDES

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def two_runs(sysu_tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    runs = []
    for seed in (0, 1):
        cfg = load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "seed": seed}})
        run_all(cfg, dataset="sysu", data_root=sysu_tree, run_dir=base / f"agw-seed{seed}", device=CPU, method="agw")
        runs.append(base / f"agw-seed{seed}")
    return runs


def test_rank_grid_frames_show_right_and_wrong(tmp_path):
    img = np.full((8, 4, 3), 128, np.uint8)
    rows = [RankRow(img, "q", np.stack([img] * 3), np.array([True, False, True]), ["a", "b", "c"])]
    grid = render_rank_grid(rows, thumb_height=16, border=2)
    # cell j of the row starts at x = 12 + (j + 1) * cell_w, cell_w = 8 + 4 + 8 = 20; its frame is at y = 4
    assert tuple(grid[4, 12 + 20]) == GREEN and tuple(grid[4, 12 + 40]) == RED and tuple(grid[4, 12 + 60]) == GREEN
    with pytest.raises(ValueError):
        render_rank_grid([])


@pytest.mark.e2e
def test_show_ranks_writes_a_readable_grid(two_runs, sysu_tree, tmp_path):
    out = tmp_path / "ranks.png"
    res = CliRunner().invoke(app, ["show-ranks", "--checkpoint", str(two_runs[0] / "fusion" / "reid.pt"), "--dataset", "sysu",
                                   "--data-root", str(sysu_tree), "--out", str(out), "--worst", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.startswith("query pid")]
    assert len(lines) == 3
    aps = [float(line.split(" AP ")[1].split(":")[0]) for line in lines]
    assert aps == sorted(aps)  # the lowest AP first
    grid = np.asarray(Image.open(out).convert("RGB"))
    # 3 rows; a query and its gallery: the tiny test gallery holds 4 ids x 4 visible cams = 15 images (pid 12 lacks 2 cams)
    assert grid.shape[0] > 3 * 128 and grid.shape[1] > 10 * 64
    # the top frame line of each of the 3 rows (title 24 px, cells 128 + 2 * 4 + 30 px high)
    frames = [tuple(px) for y in (24, 24 + 166, 24 + 2 * 166) for px in grid[y, :]]
    assert GREEN in frames and RED in frames  # right and wrong identities framed
    assert list((two_runs[0] / "tb" / "insight").glob("events.out.tfevents.*"))
    res = CliRunner().invoke(app, ["show-ranks", "--checkpoint", str(two_runs[0] / "fusion" / "reid.pt"), "--dataset", "sysu",
                                   "--data-root", str(sysu_tree), "--out", str(tmp_path / "q.png"), "--query", "14", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert all(line.startswith("query pid 14 ") for line in res.stdout.splitlines() if line.startswith("query pid"))


@pytest.mark.e2e
def test_compare_lists_config_differences_and_metrics(two_runs):
    res = CliRunner().invoke(app, ["compare", str(two_runs[0]), str(two_runs[1]), "--json"])
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout)
    assert table["runs"] == ["agw-seed0", "agw-seed1"]
    assert table["differences"] == {"fusion.seed": [0, 1]}
    first = json.loads((two_runs[0] / "results.json").read_text())
    assert table["metrics"]["Rank-1"][0] == first["rank1"]["mean"]
    text = CliRunner().invoke(app, ["compare", str(two_runs[0]), str(two_runs[1])]).stdout
    assert "config: fusion.seed" in text and "Rank-1" in text


@pytest.mark.e2e
def test_training_logs_projector_and_distance_histograms(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = two_runs[0] / "tb" / "fusion"
    acc = EventAccumulator(str(tb), size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()["histograms"]
    for name in ("pos_vis-ir", "neg_vis-ir", "pos_vis-vis", "neg_ir-ir"):
        assert f"fusion/distance/{name}" in tags
    assert (tb / "projector_config.pbtxt").is_file()
    metadata = next(tb.glob("*/*/metadata.tsv")).read_text().splitlines()
    assert metadata[0] == "pid\tmodality" and {row.split("\t")[1] for row in metadata[1:]} == {"vis", "ir"}


def test_pair_distances_by_hand():
    # ids 0, 0, 1 visible and 0 infrared, 2-d unit features
    f = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    pids = np.array([0, 0, 1, 0])
    is_ir = np.array([False, False, False, True])
    d = pair_distances(f, pids, is_ir)
    assert np.allclose(np.sort(d["pos vis-vis"]), [1.0])  # (0, 1): 1 - 0
    assert np.allclose(np.sort(d["neg vis-vis"]), [0.0, 1.0])  # (0, 2): 0, (1, 2): 1
    assert np.allclose(np.sort(d["pos vis-ir"]), [0.2, 0.4])  # (1, 3): 1 - 0.8, (0, 3): 1 - 0.6
    assert np.allclose(d["neg vis-ir"], [0.4])  # (2, 3)
    assert d["pos ir-ir"].size == 0 and d["neg ir-ir"].size == 0
