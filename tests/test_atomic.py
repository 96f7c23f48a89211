import os
import stat

import pytest

from common.atomic import atomic_write, atomic_write_json


def test_atomic_write_leaves_old_file_on_failure_and_uses_umask_permissions(tmp_path):
    path = tmp_path / "out" / "results.json"
    atomic_write_json(path, {"a": 1})
    assert path.read_text().strip().startswith("{")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert '"a": 1' in path.read_text()  # the old content survives
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left behind
