"""``pipeline search``: the chunked top-k, the query found first, galleries from folders and
feature files, refusals, the JSON lines and the grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from common.errors import UserError
from pipelines.feature_file import open_feature_file, write_feature_file
from pipelines.rank_grid import BLUE, GRAY
from pipelines.cli import app
from pipelines.inference import ReidExtractor, extract_to_file
from pipelines.search import TopK, block_rows, search
from tests.conftest import INFERENCE_METHODS

CPU = torch.device("cpu")
REPO_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_by_hand_with_ties_in_row_order():
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]], np.float32)  # distances 1, 0, 0.4, 0, 2
    for block in (1, 2, 5):
        top = TopK(q, 3, CPU)
        for start in range(0, len(g), block):
            top.update(start, g[start : start + block])
        rows, dist = top.result()
        assert rows.tolist() == [[1, 3, 2]], block  # the tie (rows 1 and 3, distance 0) in row order
        np.testing.assert_allclose(dist, [[0.0, 0.0, 0.4]], atol=1e-6)
    few = TopK(q, 10, CPU)
    few.update(0, g[:2])
    assert few.result()[0].tolist() == [[1, 0]]  # k larger than the gallery: all of it, ranked
    with pytest.raises(ValueError):
        TopK(q, 0, CPU)


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_top_k_in_blocks_equals_a_full_sort(block):
    queries, gallery = unit_rows(9, 16, 0), unit_rows(300, 16, 1)
    top = TopK(queries, 12, CPU)
    for start in range(0, len(gallery), block):
        top.update(start, gallery[start : start + block])
    rows, dist = top.result()
    full = 1.0 - queries.astype(np.float64) @ gallery.T.astype(np.float64)
    np.testing.assert_array_equal(rows, np.argsort(full, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(dist, np.take_along_axis(full, rows, axis=1), atol=1e-6)


def test_block_rows_bounds_distances_and_gallery_features():
    assert block_rows(1, 2048, 1 << 24) == (1 << 24) // 2048  # few queries: the (rows, D) block is the bound
    assert block_rows(10000, 2048, 1 << 24) == (1 << 24) // 10000  # many queries: the (Q, rows) distances are
    assert block_rows(10**9, 16, 1 << 24) == 1


def test_feature_file_is_read_in_blocks(tmp_path):
    features = unit_rows(10, 4, 2)
    meta = {"checkpoint_sha256": "ab" * 32, "checkpoint": "x.pt", "method": "agw", "modality": "visible", "feature": "post",
            "flip": False, "image_size": (32, 16)}
    path = write_feature_file(tmp_path / "f.npz", features, [f"img{i}.jpg" for i in range(10)], meta)
    store = open_feature_file(path)
    blocks = list(store.chunks(3))
    assert [start for start, _ in blocks] == [0, 3, 6, 9] and [len(b) for _, b in blocks] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), features)
    np.testing.assert_array_equal(store.features(), features)
    assert store.meta["image_size"] == (32, 16) and store.meta["flip"] is False and list(store.paths())[-1] == "img9.jpg"
    assert store.paths(np.array([[7, 2], [7, 9]])).tolist() == ["img7.jpg", "img2.jpg", "img7.jpg", "img9.jpg"]  # only these rows
    with pytest.raises(IndexError):
        store.paths(np.array([10]))
    # written block by block (as extract streams them): the same file contents
    streamed = write_feature_file(tmp_path / "s.npz", (features[i : i + 4] for i in range(0, 10, 4)), list(store.paths()),
                                  {**meta, "dim": 4})
    np.testing.assert_array_equal(np.load(streamed)["features"], features)
    with pytest.raises(ValueError, match="9 feature rows for 10 paths"):
        write_feature_file(tmp_path / "short.npz", iter([features[:9]]), list(store.paths()), {**meta, "dim": 4})
    assert not (tmp_path / "short.npz").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "s.npz"]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot be read as a feature file"):
        open_feature_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", features=features)
    with pytest.raises(UserError, match="not a feature file of pipeline extract"):
        open_feature_file(tmp_path / "other.npz")


@pytest.mark.e2e
@pytest.mark.parametrize("method", INFERENCE_METHODS)
def test_a_query_that_is_in_the_gallery_comes_first(method, trained_checkpoints, sysu_tree):
    extractor = ReidExtractor(trained_checkpoints[method], "cpu", batch_size=6)
    gallery = sysu_tree / "cam1"
    for query in (gallery / "0011" / "0002.jpg", gallery / "0014" / "0001.jpg"):
        result = search(extractor, [query], gallery, query_modality="visible", gallery_modality="visible", top=5)
        hits = result["queries"][0]["results"]
        assert hits[0]["path"] == str(query.resolve()) and hits[0]["distance"] < 1e-5, hits[:2]
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert all(a["distance"] <= b["distance"] for a, b in zip(hits, hits[1:]))


@pytest.mark.e2e
def test_gallery_file_equals_gallery_folder_and_other_checkpoints_are_refused(trained_checkpoints, sysu_tree, tmp_path):
    extractor = ReidExtractor(trained_checkpoints["glmn"], "cpu")
    gallery = sysu_tree / "cam2"
    queries = [sysu_tree / "cam3" / "0011", sysu_tree / "cam6" / "0015" / "0001.jpg"]
    store = tmp_path / "gallery.npz"
    extract_to_file(extractor, [gallery], "visible", store)
    from_folder = search(extractor, queries, gallery, query_modality="infrared", gallery_modality="visible", top=4)
    from_file = search(extractor, queries, store, query_modality="ir", gallery_modality="vis", top=4, max_scores=3)  # 1 row a block
    assert from_file["gallery_size"] == from_folder["gallery_size"] == len(list(gallery.rglob("*.jpg")))
    assert len(from_file["queries"]) == 3  # a folder of 2 queries and one file
    for a, b in zip(from_folder["queries"], from_file["queries"]):
        assert a["query"] == b["query"] and [h["path"] for h in a["results"]] == [h["path"] for h in b["results"]]
        np.testing.assert_allclose([h["distance"] for h in a["results"]], [h["distance"] for h in b["results"]], atol=1e-5)
    other = ReidExtractor(trained_checkpoints["agw"], "cpu")
    with pytest.raises(UserError, match="another checkpoint"):
        search(other, queries, store, query_modality="infrared", gallery_modality="visible")
    with pytest.raises(UserError, match="holds visible features"):
        search(extractor, queries, store, query_modality="visible", gallery_modality="infrared")
    flipped = ReidExtractor(trained_checkpoints["glmn"], "cpu", flip=True)
    with pytest.raises(UserError, match="re-extract"):
        search(flipped, queries, store, query_modality="infrared", gallery_modality="visible")
    with pytest.raises(UserError, match="--top 0"):
        search(extractor, queries, store, query_modality="infrared", gallery_modality="visible", top=0)


@pytest.mark.e2e
def test_search_command_json_table_and_grid(trained_checkpoints, sysu_tree, tmp_path):
    ck = str(trained_checkpoints["tsme"])
    query = sysu_tree / "cam4" / "0012" / "0001.jpg"
    args = ["search", "--checkpoint", ck, "--query", str(query), "--query", str(sysu_tree / "cam5" / "0014" / "0002.jpg"),
            "--gallery", str(sysu_tree / "cam4"), "--query-modality", "visible", "--gallery-modality", "visible",
            "--top", "3", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "grid.png")])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert len(lines) == 2 and [len(q["results"]) for q in lines] == [3, 3]
    assert lines[0]["query"] == str(query.resolve()) and lines[0]["results"][0]["path"] == str(query.resolve())
    assert lines[0]["results"][0]["rank"] == 1 and lines[0]["gallery_modality"] == "visible"
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    # rows start at y = 24 (title); the query's frame at x = 4, gallery frame j at 12 + (j + 1) * (64 + 8 + 8)
    assert tuple(grid[24, 4]) == BLUE and grid.shape[0] > 2 * 128
    assert [tuple(grid[24, 12 + j * 80]) for j in (1, 2, 3)] == [GRAY] * 3  # identities unknown: neutral frames
    table = CliRunner().invoke(app, args).stdout
    assert "rank  distance  path" in table and f"   1    0.0000  {query.resolve()}" in table


@pytest.mark.e2e
def test_search_command_refuses_a_gallery_of_another_checkpoint_in_one_line(trained_checkpoints, sysu_tree, tmp_path):
    store = tmp_path / "g.npz"
    extract_to_file(ReidExtractor(trained_checkpoints["agw"], "cpu"), [sysu_tree / "cam1"], "visible", store)
    proc = subprocess.run([sys.executable, "-m", "pipelines", "search", "--checkpoint", str(trained_checkpoints["mso"]),
                           "--query", str(sysu_tree / "cam3" / "0011"), "--gallery", str(store), "--device", "cpu"],
                          capture_output=True, text=True, cwd=tmp_path, env=REPO_ENV)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "another checkpoint" in lines[0] and "pipeline extract" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
