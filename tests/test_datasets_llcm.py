"""LLCM reader: a tiny tree in the original layout (idx/ lists, vis/ nir/, test_vis/ test_nir/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.datasets import load_dataset
from common.errors import UserError

# (pid -> cameras) per modality; every camera records both modalities.
TRAIN_VIS = {1: [1, 2], 2: [3], 3: [2, 9]}
TRAIN_NIR = {1: [1, 4], 2: [3], 3: [6]}
TEST_VIS = {12: [2, 5], 15: [1]}
TEST_NIR = {12: [2, 7], 15: [8]}
PER_CAM = 2


def _name(pid: int, cam: int, n: int, kind: str) -> str:
    return f"{pid:04d}_c{cam:02d}_s1853{n:02d}_f{7000 + n}_{kind}.jpg"


def _write(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (8, 4, 3), dtype=np.uint8)).save(path)


def make_llcm_tree(root: Path) -> Path:
    """LLCM layout with real 8x4 JPEGs. Training labels are class indices (not pids);
    test_nir/cam3 exists but is empty, as in the distributed copy."""
    rng = np.random.default_rng(0)
    idx = root / "idx"
    idx.mkdir(parents=True)
    labels = {pid: i for i, pid in enumerate(sorted(TRAIN_VIS))}
    for list_name, kind, cams_of in (("train_vis.txt", "vis", TRAIN_VIS), ("train_nir.txt", "nir", TRAIN_NIR)):
        lines = []
        for pid, cams in cams_of.items():
            for cam in cams:
                for n in range(1, PER_CAM + 1):
                    rel = f"{kind}/{pid:04d}/{_name(pid, cam, n, kind)}"
                    _write(root / rel, rng)
                    lines.append(f"{rel} {labels[pid]}")
        (idx / list_name).write_text("\n".join(lines) + "\n")
    for folder, kind, cams_of in (("test_vis", "vis", TEST_VIS), ("test_nir", "nir", TEST_NIR)):
        for cam in range(1, 10):
            if not (folder == "test_nir" and cam == 3):
                (root / folder / f"cam{cam}").mkdir(parents=True, exist_ok=True)
        for pid, cams in cams_of.items():
            for cam in cams:
                for n in range(1, PER_CAM + 1):
                    _write(root / folder / f"cam{cam}" / f"{pid:04d}" / _name(pid, cam, n, kind), rng)
    (root / "test_nir" / "cam3").mkdir(parents=True)
    (idx / "test_id.txt").write_text("12,15\n")
    return root


@pytest.fixture(scope="module")
def llcm_tree(tmp_path_factory) -> Path:
    return make_llcm_tree(tmp_path_factory.mktemp("llcm") / "LLCM")


def test_reads_llcm_layout_with_exact_counts(llcm_tree):
    index = load_dataset("llcm", llcm_tree)
    assert index.name == "llcm" and index.root == llcm_tree.resolve()
    assert index.extra["test_ids"] == (12, 15)
    assert sorted({s.pid for s in index.train}) == [1, 2, 3]
    assert sorted({s.pid for s in index.test}) == [12, 15]
    assert sum(s.modality == "vis" for s in index.train) == 5 * PER_CAM
    assert sum(s.modality == "ir" for s in index.train) == 4 * PER_CAM
    assert sum(s.modality == "vis" for s in index.test) == 3 * PER_CAM
    assert sum(s.modality == "ir" for s in index.test) == 3 * PER_CAM
    for split in (index.train, index.test):
        keys = [(s.pid, s.cam, s.path) for s in split]
        assert keys == sorted(keys)
        assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in split)


def test_cameras_are_physical_for_both_modalities(llcm_tree):
    index = load_dataset("llcm", llcm_tree)
    cams = lambda samples, pid, mod: sorted({s.cam for s in samples if s.pid == pid and s.modality == mod})  # noqa: E731
    assert cams(index.train, 1, "vis") == [1, 2] and cams(index.train, 1, "ir") == [1, 4]
    assert cams(index.train, 3, "vis") == [2, 9] and cams(index.train, 3, "ir") == [6]
    # test pid 12 is seen by camera 2 in both modalities: same camera number
    assert cams(index.test, 12, "vis") == [2, 5] and cams(index.test, 12, "ir") == [2, 7]
    assert index.visible_cams == (1, 2, 3, 5, 9)
    assert index.infrared_cams == (1, 2, 3, 4, 6, 7, 8)
    # the training pid comes from the path, not from the label column (pid 1 is labelled 0)
    assert 0 not in {s.pid for s in index.train}


def test_missing_root_lists_and_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("llcm", tmp_path / "nowhere")
    root = make_llcm_tree(tmp_path / "a")
    (root / "idx" / "train_nir.txt").unlink()
    with pytest.raises(UserError, match=r"idx/train_nir\.txt is missing; an LLCM copy holds"):
        load_dataset("llcm", root)
    root = make_llcm_tree(tmp_path / "b")
    (root / "idx" / "test_id.txt").unlink()
    with pytest.raises(UserError, match=r"idx/test_id\.txt is missing"):
        load_dataset("llcm", root)
    root = make_llcm_tree(tmp_path / "c")
    (root / "test_nir").rename(root / "test_ir")
    with pytest.raises(UserError, match=r"/test_nir is missing"):
        load_dataset("llcm", root)


@pytest.mark.parametrize(
    "bad_line, reason",
    [("vis/0001/0001_c01_s185301_f7001_vis.jpg", "expected"),
     ("vis/0001/0001_c01_s185301_f7001_vis.jpg x", "not an integer"),
     ("vis/0001/0001_s185301_f7001_vis.jpg 0", "cannot read identity and camera"),
     ("vis/0001/0001_c12_s185301_f7001_vis.jpg 0", "cannot read identity and camera")],
)
def test_malformed_train_line_names_file_and_line(tmp_path, bad_line, reason):
    root = make_llcm_tree(tmp_path / "LLCM")
    path = root / "idx" / "train_vis.txt"
    lines = path.read_text().splitlines()
    lines[1] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"train_vis\.txt line 2 is malformed: .*{reason}"):
        load_dataset("llcm", root)


def test_missing_listed_image_malformed_ids_and_overlap(tmp_path):
    root = make_llcm_tree(tmp_path / "a")
    gone = root / "nir" / "0002" / _name(2, 3, 1, "nir")
    gone.unlink()
    with pytest.raises(UserError, match=rf"{gone.name} is missing \(listed in .*train_nir\.txt line 5\)"):
        load_dataset("llcm", root)
    root = make_llcm_tree(tmp_path / "b")
    (root / "idx" / "test_id.txt").write_text("12;15")
    with pytest.raises(UserError, match=r"test_id\.txt is malformed"):
        load_dataset("llcm", root)
    (root / "idx" / "test_id.txt").write_text("12,15,3")
    with pytest.raises(UserError, match=r"ids \[3\] are in both"):
        load_dataset("llcm", root)
    (root / "idx" / "test_id.txt").write_text("40,41")
    with pytest.raises(UserError, match="the test split has no visible images"):
        load_dataset("llcm", root)
