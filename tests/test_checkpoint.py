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
