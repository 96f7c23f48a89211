import os

import numpy as np
import pytest

from common.data.array_cache import load_split
from common.datasets import load_dataset
from common.errors import UserError
from tests.conftest import make_sysu_tree


def test_decodes_once_then_memory_maps(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(20, 10))
    samples = load_dataset("sysu", root).train
    split = load_split(samples, (16, 8), cache_dir=tmp_path / "c", tag="t")
    assert split.images.shape == (len(samples), 16, 8, 3) and split.images.dtype == np.uint8
    assert isinstance(split.images, np.memmap)
    files = list((tmp_path / "c").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = load_split(samples, (16, 8), cache_dir=tmp_path / "c", tag="t")
    assert files[0].stat().st_mtime_ns == mtime and again.fingerprint == split.fingerprint
    np.testing.assert_array_equal(again.images, split.images)
    # infrared images come out with three equal channels; labels align with samples
    ir = split.images[split.is_ir]
    assert np.abs(ir[..., 0].astype(int) - ir[..., 1]).max() <= 2
    assert split.pids.tolist() == [s.pid for s in samples]


def test_changed_source_invalidates(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(20, 10))
    samples = load_dataset("sysu", root).train
    first = load_split(samples, (16, 8), cache_dir=tmp_path / "c", tag="t")
    path = samples[0].path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = load_split(samples, (16, 8), cache_dir=tmp_path / "c", tag="t")
    assert second.fingerprint != first.fingerprint
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2
    other_size = load_split(samples, (32, 16), cache_dir=tmp_path / "c", tag="t")
    assert other_size.images.shape[1:3] == (32, 16)


def test_corrupt_image_is_named(tmp_path):
    root = make_sysu_tree(tmp_path / "s", [1, 2], [3], [4, 5], per_cam=1, size=(20, 10))
    samples = load_dataset("sysu", root).train
    with open(samples[3].path, "wb") as fh:
        fh.write(b"not a jpeg at all")
    with pytest.raises(UserError, match=r"0001\.jpg is corrupt"):
        load_split(samples, (16, 8), cache_dir=tmp_path / "c", tag="t")
    assert not list((tmp_path / "c").glob("*.npy"))  # no half-written cache left behind
