import pytest
import torch

from common.checkpoint import load_checkpoint, save_checkpoint
from common.errors import UserError


def test_round_trip_and_kind_check(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, "dsgan", {"weights": torch.ones(2)})
    assert torch.equal(load_checkpoint(path, "dsgan")["weights"], torch.ones(2))
    with pytest.raises(UserError, match="is a stage-1 DSGAN checkpoint .* but a stage-2 re-ID checkpoint"):
        load_checkpoint(path, "reid")


def test_truncated_foreign_and_missing_files(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, "reid", {"weights": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path, "reid")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a checkpoint of this pipeline"):
        load_checkpoint(tmp_path / "foreign.pt", "reid")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt", "reid")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "reid", "format": 1, "model": {}, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(UserError, match="refused because unpickling it could run code"):
        load_checkpoint(path, "reid")
    assert not marker.exists()
    # what this pipeline writes loads under the same safe path
    save_checkpoint(tmp_path / "ok.pt", "reid", {"model": {"w": torch.ones(2)}, "config": {"a": (1, 2)}, "class_pids": [3, 5]})
    assert load_checkpoint(tmp_path / "ok.pt", "reid")["class_pids"] == [3, 5]
