"""End to end on the RegDB and LLCM layouts: run-all per split, then `pipeline test` with
each dataset's protocol (RegDB: one model per split, combined; LLCM: both directions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from common.errors import UserError
from pipelines.cli import app
from pipelines.run_all import run_all
from tests.test_datasets_llcm import TEST_NIR, TEST_VIS, PER_CAM, make_llcm_tree
from tests.test_datasets_regdb import PER_ID, TRIAL_SPLITS, make_regdb_tree

CPU = torch.device("cpu")
pytestmark = pytest.mark.e2e


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def regdb_runs(tmp_path_factory):
    """AGW trained on RegDB splits 1 and 2 of the fixture tree (one model per split)."""
    from stage2_fusion.methods import load_config
    from tests.conftest import TINY_OVERRIDES

    base = tmp_path_factory.mktemp("regdb-runs")
    root = make_regdb_tree(base / "RegDB")
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    runs = {}
    for trial in (1, 2):
        run_dir = base / f"split{trial}"
        results = run_all(cfg, dataset="regdb", data_root=root, run_dir=run_dir, device=CPU, method="agw", split=trial)
        assert results["split"] == trial
        runs[trial] = run_dir / "fusion" / "reid.pt"
    return root, runs


def test_regdb_test_combines_one_model_per_split(regdb_runs, tmp_path):
    root, runs = regdb_runs
    out = tmp_path / "regdb.json"
    res = CliRunner().invoke(app, ["test", "--dataset", "regdb", "--data-root", str(root), "--direction", "i2v",
                                   "--checkpoint", str(runs[1]), "--split", "1",
                                   "--checkpoint", str(runs[2]), "--split", "2",
                                   "--json", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    combined = _last_json(res.stdout)
    assert json.loads(out.read_text()) == combined
    assert combined["direction"] == "i2v" and combined["num_trials"] == 2
    assert [s["split"] for s in combined["splits"]] == [1, 2]
    assert all(len(s["checkpoint_sha256"]) == 64 for s in combined["splits"])
    # i2v: every thermal test image of the split is a query
    assert combined["num_query"] == len(TRIAL_SPLITS[1][1]) * PER_ID
    per_split = [t["rank1"] for t in combined["trials"]]
    assert combined["rank1"]["mean"] == pytest.approx(np.mean(per_split))
    assert combined["rank1"]["std"] == pytest.approx(np.std(per_split))


def test_regdb_test_refuses_unpaired_checkpoints_and_trials(regdb_runs):
    root, runs = regdb_runs
    res = CliRunner().invoke(app, ["test", "--dataset", "regdb", "--data-root", str(root),
                                   "--checkpoint", str(runs[1]), "--checkpoint", str(runs[2]), "--split", "1",
                                   "--device", "cpu"])
    # the app raises UserError; pipelines.cli.main turns it into one line and exit code 2
    assert isinstance(res.exception, UserError)
    assert "one --split per --checkpoint" in str(res.exception)


def test_regdb_test_takes_the_recorded_split_and_refuses_another(regdb_runs):
    root, runs = regdb_runs
    res = CliRunner().invoke(app, ["test", "--dataset", "regdb", "--data-root", str(root), "--checkpoint", str(runs[2]),
                                   "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["split"] == 2  # from the checkpoint, no --split given
    res = CliRunner().invoke(app, ["test", "--dataset", "regdb", "--data-root", str(root), "--checkpoint", str(runs[2]),
                                   "--split", "1", "--device", "cpu"])
    assert isinstance(res.exception, UserError)
    assert "trained on split 2" in str(res.exception) and "--split 2" in str(res.exception)
    # the old flag still works for one release, with a one-line deprecation
    res = CliRunner().invoke(app, ["test", "--dataset", "regdb", "--data-root", str(root), "--checkpoint", str(runs[2]),
                                   "--trial", "2", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert _last_json(res.stdout)["split"] == 2
    warnings = [line for line in res.output.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and "--trial" in warnings[0] and "--split" in warnings[0]


def test_llcm_run_all_then_both_directions(tmp_path):
    from stage2_fusion.methods import load_config
    from tests.conftest import TINY_OVERRIDES

    root = make_llcm_tree(tmp_path / "LLCM")
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    run_dir = tmp_path / "run"
    run_all(cfg, dataset="llcm", data_root=root, run_dir=run_dir, device=CPU, method="agw")
    num_images = {d: sum(len(c) for c in cams.values()) * PER_CAM for d, cams in (("vis", TEST_VIS), ("nir", TEST_NIR))}
    for direction, query in (("v2i", "vis"), ("i2v", "nir")):
        res = CliRunner().invoke(app, ["test", "--dataset", "llcm", "--data-root", str(root), "--direction", direction,
                                       "--checkpoint", str(run_dir / "fusion" / "reid.pt"), "--trials", "3",
                                       "--json", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        out = _last_json(res.stdout)
        assert out["direction"] == direction and out["num_trials"] == 3 and len(out["trials"]) == 3
        assert out["num_query"] == num_images[query]
        # the reported figure is the mean over the trials, and the trials' galleries differ (seed = trial)
        assert out["rank1"]["mean"] == pytest.approx(np.mean([t["rank1"] for t in out["trials"]]))
        assert out["mean_ap"]["mean"] == pytest.approx(np.mean([t["mean_ap"] for t in out["trials"]]))
