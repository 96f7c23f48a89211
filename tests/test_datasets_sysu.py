import pytest

from common.datasets import load_dataset
from common.errors import UserError
from tests.conftest import make_sysu_tree


def test_reads_sysu_layout_with_exact_counts(sysu_tree):
    index = load_dataset("sysu", sysu_tree)
    # training = train + val ids (8 ids x 6 cams x 2 images), test = 4 ids, pid 12 lacks cams 1, 2
    assert sorted({s.pid for s in index.train}) == [1, 2, 3, 5, 7, 8, 9, 10]
    assert len(index.train) == 8 * 6 * 2
    assert len(index.test) == 4 * 6 * 2 - 2 * 2
    assert sum(s.modality == "ir" for s in index.train) == 8 * 2 * 2
    assert {s.cam for s in index.train if s.modality == "ir"} == {3, 6}
    assert {s.cam for s in index.test if s.pid == 12} == {3, 4, 5, 6}
    keys = [(s.pid, s.cam, s.path) for s in index.test]
    assert keys == sorted(keys)  # protocols rely on (pid, cam, name) order


def test_missing_id_list_names_the_file(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(16, 8))
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(UserError, match="val_id.txt is missing"):
        load_dataset("sysu", root)


def test_malformed_id_list(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(16, 8))
    (root / "exp" / "test_id.txt").write_text("4;5")
    with pytest.raises(UserError, match="test_id.txt is malformed"):
        load_dataset("sysu", root)


def test_missing_camera_folder_and_root(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(16, 8))
    for p in sorted((root / "cam6").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "cam6").rmdir()
    with pytest.raises(UserError, match="cam6 missing"):
        load_dataset("sysu", root)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("sysu", tmp_path / "nowhere")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("market", tmp_path)
