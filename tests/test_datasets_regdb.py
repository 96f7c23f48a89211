"""RegDB reader: a tiny tree in the AGW layout (idx/ lists, Visible/<id>/, Thermal/<id>/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.datasets import load_dataset
from common.datasets.regdb import read_regdb
from common.errors import UserError

# Trial 1: train ids 1-4, test 5-8. Trial 2: train 2,4,6,8, test 1,3,5,7.
TRIAL_SPLITS = {1: ([1, 2, 3, 4], [5, 6, 7, 8]), 2: ([2, 4, 6, 8], [1, 3, 5, 7])}
PER_ID = 2  # images per identity and modality


def _image_rel(folder: str, pid: int, n: int) -> str:
    kind = "v" if folder == "Visible" else "t"
    return f"{folder}/{pid}/male_front_{kind}_{n:05d}_{pid}.bmp"


def make_regdb_tree(root: Path, splits: dict[int, tuple[list[int], list[int]]] = TRIAL_SPLITS) -> Path:
    """RegDB layout with real 8x4 BMP files; like the real lists, the label column is a
    per-file class index (0..n-1 in reverse id order), not the person id."""
    rng = np.random.default_rng(0)
    pids = sorted({p for train, test in splits.values() for p in train + test})
    for pid in pids:
        for folder in ("Visible", "Thermal"):
            for n in range(1, PER_ID + 1):
                path = root / _image_rel(folder, pid, n)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (8, 4, 3), dtype=np.uint8)).save(path)
    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    for trial, (train, test) in splits.items():
        for split, ids in (("train", train), ("test", test)):
            labels = {pid: i for i, pid in enumerate(sorted(ids, reverse=True))}
            for word, folder in (("visible", "Visible"), ("thermal", "Thermal")):
                lines = [f"{_image_rel(folder, pid, n)} {labels[pid]}" for pid in ids for n in range(1, PER_ID + 1)]
                (idx / f"{split}_{word}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def regdb_tree(tmp_path_factory) -> Path:
    return make_regdb_tree(tmp_path_factory.mktemp("regdb") / "RegDB")


def test_reads_trial_one_with_exact_counts_pids_and_cams(regdb_tree):
    index = load_dataset("regdb", regdb_tree)
    assert index.name == "regdb" and index.extra == {"trial": 1}
    assert index.root == regdb_tree.resolve()
    assert index.visible_cams == (1,) and index.infrared_cams == (2,)
    assert len(index.train) == 4 * PER_ID * 2 and len(index.test) == 4 * PER_ID * 2
    assert sorted({s.pid for s in index.train}) == [1, 2, 3, 4]
    assert sorted({s.pid for s in index.test}) == [5, 6, 7, 8]
    for split in (index.train, index.test):
        assert sum(s.modality == "vis" for s in split) == 4 * PER_ID
        assert {s.cam for s in split if s.modality == "vis"} == {1}
        assert {s.cam for s in split if s.modality == "ir"} == {2}
        keys = [(s.pid, s.cam, s.path) for s in split]
        assert keys == sorted(keys)
    sample = index.train[0]
    assert Path(sample.path).is_absolute() and Path(sample.path).is_file()
    assert (sample.pid, sample.cam, sample.modality) == (1, 1, "vis")
    assert "/Visible/1/" in sample.path


def test_pid_is_the_person_folder_not_the_label_column(regdb_tree):
    # the fixture labels pid 4 as 0 and pid 1 as 3 in the training lists
    index = read_regdb(regdb_tree, trial=1)
    by_pid = {s.pid: s for s in index.train}
    assert by_pid[4].path.endswith("_4.bmp") and by_pid[1].path.endswith("_1.bmp")
    assert 0 not in by_pid


def test_trial_selects_the_split(regdb_tree):
    index = load_dataset("regdb", regdb_tree, split=2)
    assert index.extra == {"trial": 2}
    assert sorted({s.pid for s in index.train}) == [2, 4, 6, 8]
    assert sorted({s.pid for s in index.test}) == [1, 3, 5, 7]
    assert len(index.test) == 4 * PER_ID * 2


@pytest.mark.parametrize("trial", [0, 11, "1"])
def test_trial_outside_one_to_ten(regdb_tree, trial):
    with pytest.raises(UserError, match=r"outside 1\.\.10"):
        load_dataset("regdb", regdb_tree, split=trial)


def test_missing_index_file_names_it(tmp_path):
    root = make_regdb_tree(tmp_path / "RegDB")
    (root / "idx" / "test_thermal_2.txt").unlink()
    load_dataset("regdb", root, split=1)  # trial 1 is intact
    with pytest.raises(UserError) as err:
        load_dataset("regdb", root, split=2)
    message = str(err.value)
    assert "idx/test_thermal_2.txt is missing" in message and "\n" not in message
    assert "idx/{train,test}_{visible,thermal}_{1..10}.txt" in message


@pytest.mark.parametrize(
    "bad_line, reason",
    [("Visible/1/male_front_v_00001_1.bmp", "expected"),
     ("Visible/1/male_front_v_00001_1.bmp one", "not an integer"),
     ("Visible/male_front_v_00001_1.bmp 0", "numeric person-id folder")],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    root = make_regdb_tree(tmp_path / "RegDB", {1: TRIAL_SPLITS[1]})
    path = root / "idx" / "train_visible_1.txt"
    lines = path.read_text().splitlines()
    lines[2] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"train_visible_1\.txt line 3 is malformed: .*{reason}"):
        load_dataset("regdb", root)


def test_missing_listed_image_is_named(tmp_path):
    root = make_regdb_tree(tmp_path / "RegDB", {1: TRIAL_SPLITS[1]})
    gone = root / _image_rel("Thermal", 6, 2)
    gone.unlink()
    with pytest.raises(UserError, match=rf"{gone.name} is missing \(listed in .*test_thermal_1\.txt line 4\)"):
        load_dataset("regdb", root)


def test_missing_root_and_overlapping_lists(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("regdb", tmp_path / "nowhere")
    root = make_regdb_tree(tmp_path / "RegDB", {1: ([1, 2, 3], [3, 4])})
    with pytest.raises(UserError, match=r"person ids \[3\] are in both"):
        load_dataset("regdb", root)
