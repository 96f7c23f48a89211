"""Learning rates of every parameter group at the epochs the papers name, through the very
optimiser and scheduler the training loop builds (stage2_fusion.train.build_for_training)."""

from __future__ import annotations

import pytest
import torch

from stage2_fusion.methods import load_config
from common.errors import UserError
from stage2_fusion.optim import build_optimizer, lr_factor
from stage2_fusion.train import build_for_training

CPU = torch.device("cpu")
SMALL_BODY = {"fusion": {"recipes": {"tsme": {"embed_dim": 16}}, "backbone": {"layers": [1, 1, 1, 1], "base_width": 8, "nonlocal_blocks": [0, 1, 1, 0], "pretrained": "none"}}}


def _lrs_by_epoch(method: str, profile: str = "paper", overrides=None) -> tuple[list[tuple[float, float]], object]:
    """(body lr, head lr) during each epoch, stepping the scheduler once per epoch as the loop does."""
    cfg = load_config(profile, overrides={**SMALL_BODY, **(overrides or {})})
    model, _, optimizer, scheduler, recipe = build_for_training(cfg, method, 5, CPU)
    lrs = []
    for _ in range(recipe.epochs):
        lrs.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"]))
        optimizer.step()  # (no gradients: a no-op step keeps the scheduler's order warning away)
        scheduler.step()
    return lrs, (model, optimizer)


def test_agw_paper_schedule_warmup_milestones_and_body_rate():
    # AGW train.py adjust_learning_rate with --lr 0.1: lr * (epoch + 1) / 10 for epoch < 10,
    # 0.1 for 10..19, 0.01 for 20..49, 0.001 from 50; the backbone group at 0.1 x that.
    lrs, _ = _lrs_by_epoch("agw")
    assert len(lrs) == 81
    expected_head = {0: 0.01, 1: 0.02, 4: 0.05, 8: 0.09, 9: 0.1, 10: 0.1, 19: 0.1, 20: 0.01, 49: 0.01, 50: 0.001, 80: 0.001}
    for epoch, head in expected_head.items():
        body_lr, head_lr = lrs[epoch]
        assert head_lr == pytest.approx(head, rel=1e-9), epoch
        assert body_lr == pytest.approx(0.1 * head, rel=1e-9), epoch


def test_tsme_paper_schedule_has_no_warmup_and_three_milestones():
    # TSME train.py adjust_learning_rate with --lr 0.1: 0.1 for epochs < 20, 0.01 for 20..39,
    # 0.001 for 40..59, 0.0001 from 60; param_groups[0] (base) at 0.1 x lr.
    lrs, _ = _lrs_by_epoch("tsme")
    assert len(lrs) == 300
    expected_head = {0: 0.1, 19: 0.1, 20: 0.01, 39: 0.01, 40: 0.001, 59: 0.001, 60: 0.0001, 299: 0.0001}
    for epoch, head in expected_head.items():
        body_lr, head_lr = lrs[epoch]
        assert head_lr == pytest.approx(head, rel=1e-9), epoch
        assert body_lr == pytest.approx(0.1 * head, rel=1e-9), epoch


def test_heads_and_body_are_the_right_parameters():
    _, (model, optimizer) = _lrs_by_epoch("agw", overrides={"fusion": {**SMALL_BODY["fusion"], "recipes": {"agw": {"epochs": 1}}}})
    body, heads = ({id(p) for p in g["params"]} for g in optimizer.param_groups)
    # AGW: the BNNeck (BN weight + classifier) at the full rate; the BN bias is frozen, in no group
    assert heads == {id(model.bnneck.bn.weight), id(model.bnneck.classifier.weight)}
    assert id(model.bnneck.bn.bias) not in body | heads
    assert id(model.backbone.stems["vis"].conv1.weight) in body and id(model.backbone.layer4[0].conv1.weight) in body
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(body) + len(heads) == n_trainable


def test_sgd_settings_and_adam_choice():
    cfg = load_config("paper", overrides=SMALL_BODY)
    _, _, optimizer, _, _ = build_for_training(cfg, "agw", 5, CPU)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[1]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 5e-4)
    adam_cfg = load_config("paper", overrides={**SMALL_BODY, "fusion": {**SMALL_BODY["fusion"], "recipes": {"agw": {"optimizer": "adam", "lr": 5e-4}}}})
    _, _, adam, _, _ = build_for_training(adam_cfg, "agw", 5, CPU)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[1]["lr"] == pytest.approx(5e-5) and adam.param_groups[0]["lr"] == pytest.approx(5e-6)  # warm-up 1/10
    assert adam.param_groups[1]["weight_decay"] == 5e-4


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError, match="optimizer"):
        load_config("demo", overrides={"fusion": {"recipes": {"agw": {"optimizer": "rmsprop"}}}})

    class Recipe:
        optimizer, lr, backbone_lr_mult = "rmsprop", 0.1, 0.1

    model = torch.nn.Linear(2, 2)
    model.head_modules = lambda: []
    with pytest.raises(UserError, match="rmsprop"):
        build_optimizer(model, Recipe())


def test_lr_factor_literal_values():
    assert lr_factor(0, 10, (20, 50), 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, (20, 50), 0.1) == pytest.approx(1.0)
    assert lr_factor(20, 10, (20, 50), 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 10, (20, 50), 0.1) == pytest.approx(0.01)
    assert lr_factor(3, 0, (3,), 0.5) == pytest.approx(0.5)  # no warm-up; milestone counts from its epoch
    assert lr_factor(2, 0, (3,), 0.5) == pytest.approx(1.0)


def test_mscmnet_paper_schedule_linear_warmup_from_a_tenth_and_three_milestones():
    # MSCMNet build_lrscheduler.py: WarmupMultiStepLR(milestones (25, 90, 120), gamma 0.1, warmup_factor 0.1,
    # warmup_epochs 10, 'linear'): factor 0.1 * (1 - e/10) + e/10 for e < 10 -> 0.1, 0.19, ..., 0.91
    lrs, (model, _) = _lrs_by_epoch("mscmnet")
    assert len(lrs) == 150
    expected_head = {0: 0.01, 1: 0.019, 5: 0.055, 9: 0.091, 10: 0.1, 24: 0.1, 25: 0.01, 89: 0.01, 90: 0.001, 120: 0.0001, 149: 0.0001}
    for epoch, head in expected_head.items():
        body_lr, head_lr = lrs[epoch]
        assert head_lr == pytest.approx(head, rel=1e-9), epoch
        assert body_lr == pytest.approx(0.1 * head, rel=1e-9), epoch


def test_glmn_paper_schedule_is_agws():
    lrs, _ = _lrs_by_epoch("glmn")
    assert len(lrs) == 101
    for epoch, head in {0: 0.01, 9: 0.1, 19: 0.1, 20: 0.01, 50: 0.001, 100: 0.001}.items():
        assert lrs[epoch][1] == pytest.approx(head, rel=1e-9), epoch


def test_mscmnet_trains_at_its_own_input_size():
    from common.config import for_method

    cfg = for_method(load_config("paper"), "mscmnet")
    assert (cfg.data.height, cfg.data.width) == (384, 192)  # MSCMNet train.py --img_h 384 --img_w 192
    assert (for_method(load_config("paper"), "agw").data.height, for_method(load_config("paper"), "agw").data.width) == (288, 144)
