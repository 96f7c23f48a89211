import json

import numpy as np
import pytest

from common.errors import UserError
from common.data.partner_cache import MANIFEST, PartnerCacheInputs, PartnerCacheWriter, open_partner_cache


def _inputs(tmp_path, count=10, **kw):
    gen = tmp_path / "gan.pt"
    if not gen.exists():
        gen.write_bytes(b"generator weights v1")
    from common.checkpoint import file_sha256

    base = dict(generator=str(gen), generator_sha256=file_sha256(gen), dataset="demo", data_root="data/demo",
                data_fingerprint="fp1", image_size=(4, 2), count=count)
    return PartnerCacheInputs(**{**base, **kw})


def _partners(count):
    return np.arange(count * 4 * 2 * 3, dtype=np.int64).reshape(count, 4, 2, 3).astype(np.uint8)


def _write_cache(tmp_path, out, count=10, shard_size=4):
    inputs = _inputs(tmp_path, count)
    writer = PartnerCacheWriter(out, inputs, shard_size)
    data = _partners(count)
    for i in range(writer.num_shards):
        a, b = writer.shard_range(i)
        writer.write_shard(i, data[a:b])
    writer.finish()
    return inputs, data


def _open(out, inputs, **kw):
    args = dict(dataset=inputs.dataset, data_fingerprint=inputs.data_fingerprint, image_size=inputs.image_size, count=inputs.count)
    return open_partner_cache(out, **{**args, **kw})


def test_round_trip_by_index(tmp_path):
    inputs, data = _write_cache(tmp_path, tmp_path / "cache")
    cache = _open(tmp_path / "cache", inputs)
    idx = np.array([9, 0, 5, 4, 3])
    np.testing.assert_array_equal(cache[idx], data[idx])
    assert len(cache) == 10 and len(cache.shards) == 3


def test_refuses_incomplete_cache_with_resume_command(tmp_path):
    inputs = _inputs(tmp_path)
    writer = PartnerCacheWriter(tmp_path / "cache", inputs, 4)
    writer.write_shard(0, _partners(10)[:4])
    with pytest.raises(UserError, match="incomplete.*pipeline generate-pairs --checkpoint") as info:
        _open(tmp_path / "cache", inputs)
    assert "\n" not in str(info.value)


def test_resume_keeps_finished_shards_and_equals_uninterrupted(tmp_path):
    inputs = _inputs(tmp_path)
    data = _partners(10)
    writer = PartnerCacheWriter(tmp_path / "a", inputs, 4)
    writer.write_shard(0, data[:4])
    resumed = PartnerCacheWriter(tmp_path / "a", inputs, 4)  # as after a crash
    assert resumed.done(0) and not resumed.done(1)
    for i in (1, 2):
        a, b = resumed.shard_range(i)
        resumed.write_shard(i, data[a:b])
    resumed.finish()
    _write_cache(tmp_path, tmp_path / "b")
    ma = json.loads((tmp_path / "a" / MANIFEST).read_text())
    mb = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(dataset="sysu"), "another dataset"),
        (dict(data_fingerprint="fp2"), "another dataset or a changed copy"),
        (dict(image_size=(8, 4)), "holds 4x2 images but this run uses 8x4"),
        (dict(generator_sha256="0" * 64), "another generator"),
    ],
)
def test_refuses_stale_cache(tmp_path, change, message):
    inputs, _ = _write_cache(tmp_path, tmp_path / "cache")
    with pytest.raises(UserError, match=message):
        _open(tmp_path / "cache", inputs, **change)


def test_refuses_cache_whose_generator_file_changed(tmp_path):
    inputs, _ = _write_cache(tmp_path, tmp_path / "cache")
    (tmp_path / "gan.pt").write_bytes(b"generator weights v2, retrained")
    with pytest.raises(UserError, match="stale: its generator .* has changed"):
        _open(tmp_path / "cache", inputs)


def test_refuses_corrupt_shard(tmp_path):
    inputs, _ = _write_cache(tmp_path, tmp_path / "cache")
    shard = tmp_path / "cache" / "shard_00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="shard_00001.npy is corrupt"):
        _open(tmp_path / "cache", inputs)
    shard.unlink()
    with pytest.raises(UserError, match="shard_00001.npy is missing"):
        _open(tmp_path / "cache", inputs)


def test_writer_refuses_foreign_folders(tmp_path):
    inputs, _ = _write_cache(tmp_path, tmp_path / "cache")
    with pytest.raises(UserError, match="already holds a complete partner cache"):
        PartnerCacheWriter(tmp_path / "cache", inputs)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a partner cache"):
        PartnerCacheWriter(tmp_path / "other", inputs)
    with pytest.raises(UserError, match="not a partner cache"):
        _open(tmp_path / "other", inputs)
