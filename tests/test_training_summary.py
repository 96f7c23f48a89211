"""What a run says about how long it trained and how well stage 2 fits: optimiser steps of
both stages, stage 2's per-epoch training accuracy (results.json), and run-all's line that
names the longer profile the ablation uses."""

import json

import torch

from pipelines.cli import schedule_line
from pipelines.run_all import run_all
from stage2_fusion.methods import load_config

CPU = torch.device("cpu")


def test_schedule_line_names_this_runs_steps_and_the_full_profiles():
    full = load_config("demo-full")
    line = schedule_line({"stage1_optimiser_steps": 100, "stage2_optimiser_steps": 270, "final_train_acc": 0.071}, "demo", "tsme")
    assert line.startswith("trained 100 DSGAN steps and 270 tsme steps (final training accuracy 0.07) (profile demo)")
    gan_steps = full.gan.epochs * full.gan.steps_per_epoch
    tsme = full.fusion.recipe("tsme")
    assert f"the demo-full profile, which the ablation uses, trains {gan_steps:,} DSGAN steps and {tsme.epochs * tsme.steps_per_epoch:,} tsme steps" in line
    agw = schedule_line({"stage2_optimiser_steps": 252, "final_train_acc": 0.96}, "demo", "agw")
    assert "DSGAN" not in agw and f"{full.fusion.recipe('agw').epochs * full.fusion.recipe('agw').steps_per_epoch:,} agw steps" in agw
    assert schedule_line({}, "paper", "agw") == "profile paper"  # no longer profile to point to


def test_run_all_records_steps_and_the_training_accuracy_curve(sysu_tree, tiny_cfg, tmp_path):
    results = run_all(tiny_cfg, dataset="sysu", data_root=sysu_tree, run_dir=tmp_path / "run", device=CPU, method="tsme", extras=False)
    training = results["training"]
    recipe, gan = tiny_cfg.fusion.recipe("tsme"), tiny_cfg.gan
    assert training["stage2_optimiser_steps"] == recipe.epochs * recipe.steps_per_epoch
    assert training["stage1_optimiser_steps"] == gan.epochs * gan.steps_per_epoch
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r["train_acc"] for r in logged if r["stage"] == "fusion" and "train_acc" in r]
    assert [c["train_acc"] for c in training["train_curve"]] == per_epoch and len(per_epoch) == recipe.epochs
    assert training["final_train_acc"] == per_epoch[-1]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["training"] == training
