"""check_dataset / format_check: JSON shape, protocol counts per dataset, missing files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.datasets.check import POOL_NOTE, check_dataset, format_check
from common.errors import UserError
from tests.conftest import make_sysu_tree
from tests.test_datasets_llcm import make_llcm_tree
from tests.test_datasets_regdb import make_regdb_tree

TOP_KEYS = {"dataset", "root", "train", "query", "gallery", "protocol"}
COUNT_KEYS = {"ids", "images", "cams"}


@pytest.fixture(scope="module")
def small_sysu(tmp_path_factory) -> Path:
    # 4 training ids (3 train + 1 val), 3 test ids; pid 7 lacks cameras 1 and 2
    root = tmp_path_factory.mktemp("check-sysu") / "SYSU-MM01"
    return make_sysu_tree(root, [1, 2, 3], [4], [5, 6, 7], per_cam=1, size=(8, 4), missing={7: [1, 2]})


def _assert_reid_shape(summary: dict, *, gallery_note: bool) -> None:
    assert set(summary) == TOP_KEYS
    assert set(summary["train"]) == {"visible", "infrared"}
    for block in summary["train"].values():
        assert set(block) == COUNT_KEYS
    assert set(summary["query"]) == COUNT_KEYS | {"modality"}
    assert set(summary["gallery"]) == COUNT_KEYS | {"modality"} | ({"note"} if gallery_note else set())
    assert json.loads(json.dumps(summary)) == summary  # JSON-able as is


def test_sysu_summary_shape_and_counts(small_sysu):
    summary = check_dataset("sysu", small_sysu)
    _assert_reid_shape(summary, gallery_note=True)
    assert summary["dataset"] == "sysu" and summary["root"] == str(small_sysu.resolve())
    assert summary["train"] == {
        "visible": {"ids": 4, "images": 4 * 4, "cams": [1, 2, 4, 5]},
        "infrared": {"ids": 4, "images": 4 * 2, "cams": [3, 6]},
    }
    assert summary["query"] == {"ids": 3, "images": 3 * 2, "cams": [3, 6], "modality": "infrared"}
    assert summary["gallery"] == {"ids": 3, "images": 3 * 4 - 2, "cams": [1, 2, 4, 5], "modality": "visible",
                                  "note": POOL_NOTE}
    assert summary["protocol"] == {"mode": "all"}


def test_sysu_indoor_gallery_pool(small_sysu):
    summary = check_dataset("sysu", small_sysu, mode="indoor")
    assert summary["query"]["images"] == 3 * 2  # queries do not depend on the mode
    assert summary["gallery"] == {"ids": 2, "images": 2 * 2, "cams": [1, 2], "modality": "visible", "note": POOL_NOTE}
    assert summary["protocol"] == {"mode": "indoor"}


@pytest.mark.parametrize("trial, train_ids, test_ids", [(1, 4, 4), (2, 4, 4)])
def test_regdb_both_directions(tmp_path_factory, trial, train_ids, test_ids):
    root = make_regdb_tree(tmp_path_factory.mktemp("check-regdb") / "RegDB")
    v2i = check_dataset("regdb", root, split=trial)
    _assert_reid_shape(v2i, gallery_note=False)
    assert v2i["train"]["visible"] == {"ids": train_ids, "images": train_ids * 2, "cams": [1]}
    assert v2i["train"]["infrared"] == {"ids": train_ids, "images": train_ids * 2, "cams": [2]}
    assert v2i["query"] == {"ids": test_ids, "images": test_ids * 2, "cams": [1], "modality": "visible"}
    assert v2i["gallery"] == {"ids": test_ids, "images": test_ids * 2, "cams": [2], "modality": "infrared"}
    assert v2i["protocol"] == {"direction": "v2i", "split": trial}
    i2v = check_dataset("regdb", root, split=trial, direction="i2v")
    assert i2v["query"]["modality"] == "infrared" and i2v["query"]["cams"] == [2]
    assert i2v["gallery"]["modality"] == "visible" and i2v["gallery"]["cams"] == [1]
    assert i2v["protocol"] == {"direction": "i2v", "split": trial}


def test_llcm_summary(tmp_path):
    root = make_llcm_tree(tmp_path / "LLCM")
    summary = check_dataset("llcm", root)
    _assert_reid_shape(summary, gallery_note=True)
    assert summary["train"]["visible"] == {"ids": 3, "images": 10, "cams": [1, 2, 3, 9]}
    assert summary["train"]["infrared"] == {"ids": 3, "images": 8, "cams": [1, 3, 4, 6]}
    assert summary["query"] == {"ids": 2, "images": 6, "cams": [1, 2, 5], "modality": "visible"}
    assert summary["gallery"] == {"ids": 2, "images": 6, "cams": [2, 7, 8], "modality": "infrared", "note": POOL_NOTE}
    assert summary["protocol"] == {"direction": "v2i"}
    i2v = check_dataset("llcm", root, direction="i2v")
    assert i2v["query"]["cams"] == [2, 7, 8] and i2v["gallery"]["cams"] == [1, 2, 5]


def test_pairs_summary(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("visible", "infrared"):
        (tmp_path / folder).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 4, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i:02d}.jpg")
    summary = check_dataset("pairs", tmp_path)
    assert summary == {"dataset": "pairs", "root": str(tmp_path.resolve()),
                       "train": {"pairs": 5, "images": 10}, "held_out": {"pairs": 1, "images": 2}}
    assert "held_out" in format_check(summary)


def test_missing_image_is_named(tmp_path):
    # a dangling file in a SYSU camera folder: listed by the reader, gone on disk
    root = make_sysu_tree(tmp_path / "s", [1], [2], [3], per_cam=1, size=(8, 4))
    dangling = root / "cam4" / "0003" / "0009.jpg"
    dangling.symlink_to(tmp_path / "nothing-here.jpg")
    with pytest.raises(UserError) as err:
        check_dataset("sysu", root)
    assert str(dangling) in str(err.value) and "is missing" in str(err.value)
    # RegDB: an image named in an idx list
    root = make_regdb_tree(tmp_path / "RegDB")
    (root / "Visible" / "7" / "male_front_v_00001_7.bmp").unlink()
    with pytest.raises(UserError, match=r"Visible/7/male_front_v_00001_7\.bmp is missing"):
        check_dataset("regdb", root, split=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"name": "market"}, "unknown dataset 'market'"),
     ({"name": "sysu", "mode": "outdoor"}, "unknown search mode 'outdoor'"),
     ({"name": "regdb", "direction": "t2v"}, "unknown search direction 't2v'")],
)
def test_bad_arguments(small_sysu, kwargs, message):
    with pytest.raises(UserError, match=message):
        check_dataset(root=small_sysu, **kwargs)


def test_format_check_is_an_aligned_table(small_sysu):
    text = format_check(check_dataset("sysu", small_sysu, mode="indoor"))
    lines = text.splitlines()
    assert lines[0].startswith("sysu  ")
    assert lines[1].split() == ["split", "modality", "ids", "images", "cameras"]
    rows = [line.split()[:5] for line in lines[2:6]]
    assert rows == [["train", "visible", "4", "16", "1,2,4,5"], ["train", "infrared", "4", "8", "3,6"],
                    ["query", "infrared", "3", "6", "3,6"], ["gallery", "visible", "2", "4", "1,2"]]
    assert POOL_NOTE in lines[5]
    # the columns line up: the cameras column starts at the same offset on every row
    starts = {line.rindex(cells[4]) for line, cells in zip(lines[2:6], rows)}
    assert starts == {lines[1].index("cameras")}
    assert lines[-1] == "protocol: mode indoor"
