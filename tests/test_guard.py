"""The non-finite loss guard: NaN/inf steps are skipped and logged, the run stops past the
limit with one clear line, and the last good checkpoint survives."""

from __future__ import annotations

import json

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.errors import UserError
from common.guard import NonFiniteGuard
from pipelines.data import load_splits

CPU = torch.device("cpu")


def test_guard_counts_skips_and_aborts_past_the_limit(tmp_path):
    guard = NonFiniteGuard("stage 2 (agw)", 2, tmp_path / "last.pt")
    assert guard.finite(torch.tensor(1.0), torch.tensor(2.0), epoch=0, step=0)
    assert not guard.finite(torch.tensor(float("nan")), epoch=0, step=1)
    assert not guard.finite(torch.tensor(1.0), torch.tensor(float("inf")), epoch=0, step=2)
    assert guard.skipped == guard.skipped_in_epoch == 2
    guard.start_epoch()
    assert guard.skipped_in_epoch == 0 and guard.skipped == 2
    with pytest.raises(UserError, match=r"NaN/inf in 3 steps \(last at epoch 2 step 5\), more than the 2 allowed; no epoch had finished"):
        guard.finite(torch.tensor(float("-inf")), epoch=1, step=4)
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="last good state is kept in .*last.pt"):
        NonFiniteGuard("s", 0, tmp_path / "last.pt").finite(torch.tensor(float("nan")), epoch=0, step=0)


def _nan_on_steps(monkeypatch, trainer, bad_calls):
    """Make the method's loss NaN on the given (0-based) calls of the loss function."""
    original = trainer.build_method
    calls = {"n": 0}

    def build(name, cfg, num_classes):
        model, loss_fn = original(name, cfg, num_classes)

        def poisoned(outputs, labels, is_ir, recipe):
            losses = loss_fn(outputs, labels, is_ir, recipe)
            if calls["n"] in bad_calls:
                losses = {**losses, "total": losses["total"] * float("nan")}
            calls["n"] += 1
            return losses

        return model, poisoned

    monkeypatch.setattr(trainer, "build_method", build)


def test_training_skips_nan_steps_and_keeps_finite_weights(sysu_tree, tiny_cfg, tmp_path, monkeypatch, capsys):
    import stage2_fusion.train as trainer

    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    _nan_on_steps(monkeypatch, trainer, {1, 4})  # step 2 of epoch 1, step 2 of epoch 2 (3 steps per epoch)
    reid = trainer.train_fusion(tiny_cfg, "agw", splits.train, tmp_path / "run" / "fusion", CPU)
    weights = load_checkpoint(reid, "reid")["model"]
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_steps"] for r in records] == [1, 1]
    assert all(torch.isfinite(torch.tensor(r["loss_total"])) for r in records)
    assert "non-finite loss at epoch 1 step 2: step skipped" in capsys.readouterr().err


def test_training_stops_past_the_limit_and_keeps_the_last_good_checkpoint(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    import dataclasses

    import stage2_fusion.train as trainer

    cfg = dataclasses.replace(tiny_cfg, fusion=dataclasses.replace(tiny_cfg.fusion, max_nonfinite_steps=1))
    splits = load_splits(cfg, "sysu", sysu_tree, with_test=False)
    _nan_on_steps(monkeypatch, trainer, {3, 4})  # both in epoch 2: the second one is one too many
    out = tmp_path / "run" / "fusion"
    with pytest.raises(UserError, match=r"more than the 1 allowed; the last good state is kept in .*last\.pt"):
        trainer.train_fusion(cfg, "agw", splits.train, out, CPU)
    last = load_checkpoint(out / "last.pt", "reid")
    assert last["epoch"] == 1 and all(torch.isfinite(v.float()).all() for v in last["model"].values())
    assert not (out / "reid.pt").exists()


def test_gan_training_skips_a_nan_step(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    import stage1_dsgan.train as gan_trainer
    from pipelines.stages import train_gan_stage as stage_train_gan

    original, calls = gan_trainer.generator_loss, {"n": 0}

    def poisoned(**kwargs):
        losses = original(**kwargs)
        calls["n"] += 1
        return {**losses, "total": losses["total"] * float("nan")} if calls["n"] == 2 else losses

    monkeypatch.setattr(gan_trainer, "generator_loss", poisoned)
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    gan = stage_train_gan(tiny_cfg, splits, tmp_path / "run", CPU)
    state = load_checkpoint(gan, "dsgan")
    assert all(torch.isfinite(v.float()).all() for v in state["g_vis2ir"].values())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"gan"' in line]
    assert [r["nonfinite_steps"] for r in records] == [1, 0]


def test_check_state_names_the_first_non_finite_tensor_and_the_checkpoint_kept(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    guard = NonFiniteGuard("stage 2 (mscmnet)", 20, tmp_path / "last.pt")
    guard.check_state(net, epoch=0)  # finite: nothing happens (the integer num_batches_tracked is not looked at)
    net[1].running_var[2] = float("nan")
    with pytest.raises(UserError, match=r"became NaN/inf during epoch 3 \(first: 1\.running_var; 0 step\(s\).*no earlier epoch had finished"):
        guard.check_state(net, epoch=2)
    (tmp_path / "last.pt").write_bytes(b"x")
    net[1].running_var[2] = 1.0
    with torch.no_grad():
        net[0].weight[0, 0] = float("inf")
    with pytest.raises(UserError, match=r"\(first: 0\.weight;.*the last good state \(after epoch 2\) is kept in .*last\.pt"):
        guard.check_state(net, epoch=2)
    with torch.no_grad():
        net[0].weight[0, 0] = 0.5
    guard.check_state(net, epoch=2, probe=torch.ones(2, 3))
    with pytest.raises(UserError, match=r"\(first: the test-mode features of training images \(eval mode overflows\);"):
        guard.check_state(net, epoch=2, probe=torch.tensor([[1.0, float("nan")]]))


def _before_forward(monkeypatch, call: int, act) -> None:
    """Make every stage-2 model built from now on run ``act(model, args)`` just before its
    ``call``-th forward pass (1-based); what ``act`` returns replaces the forward's arguments
    (None keeps them)."""
    import stage2_fusion.train as trainer

    original, calls = trainer.build_method, {"n": 0}

    def build(name, cfg, num_classes):
        model, loss_fn = original(name, cfg, num_classes)

        def hook(module, args):
            calls["n"] += 1
            return act(module, args) if calls["n"] == call else None

        model.register_forward_pre_hook(hook)
        return model, loss_fn

    monkeypatch.setattr(trainer, "build_method", build)


def test_training_stops_when_a_nan_batch_poisons_the_batchnorm_statistics(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    """MSCMNet's failure on a small SYSU copy: a NaN forward leaves the loss step skipped but the
    running statistics NaN; without the state check the run went on and tested NaN features."""
    import stage2_fusion.train as trainer

    # the 5th forward (epoch 2, step 2 of 3) sees NaN images
    _before_forward(monkeypatch, 5, lambda model, args: ({k: v * float("nan") for k, v in args[0].items()}, *args[1:]))
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    out = tmp_path / "run" / "fusion"
    with pytest.raises(UserError, match=r"stage 2 \(agw\): the weights, BatchNorm statistics or test-mode features became NaN/inf during epoch 2 "
                                        r"\(first: .*running_(mean|var); 1 step\(s\) with a NaN/inf loss skipped so far\); "
                                        r"the last good state \(after epoch 1\) is kept in .*last\.pt"):
        trainer.train_fusion(tiny_cfg, "agw", splits.train, out, CPU)
    last = load_checkpoint(out / "last.pt", "reid")
    assert last["epoch"] == 1 and all(torch.isfinite(v.float()).all() for v in last["model"].values())
    assert not (out / "reid.pt").exists()


def test_training_stops_when_eval_mode_overflows_with_finite_weights(sysu_tree, tiny_cfg, tmp_path, monkeypatch):
    """Finite weights and statistics whose eval-mode activations overflow (MSCMNet's layer3 at
    1e36 on a tiny SYSU copy): the end-of-epoch probe of test features stops the run."""
    import stage2_fusion.train as trainer

    def skew_statistics(model, args):  # epoch 2: a running mean train mode never uses, finite but absurd
        model.backbone.stems["vis"].bn1.running_mean.fill_(-3e38)

    _before_forward(monkeypatch, 4, skew_statistics)
    splits = load_splits(tiny_cfg, "sysu", sysu_tree, with_test=False)
    out = tmp_path / "run" / "fusion"
    with pytest.raises(UserError, match=r"became NaN/inf during epoch 2 \(first: the test-mode features of training images "
                                        r"\(eval mode overflows\); 0 step\(s\).*kept in .*last\.pt"):
        trainer.train_fusion(tiny_cfg, "agw", splits.train, out, CPU)
    assert load_checkpoint(out / "last.pt", "reid")["epoch"] == 1 and not (out / "reid.pt").exists()
