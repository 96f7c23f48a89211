"""Resume as a fast unit test: a last.pt restores model, optimiser (momentum), scheduler and
GradScaler state, so the next step is the one an uninterrupted run takes."""

from __future__ import annotations

import torch

from common.checkpoint import load_checkpoint, save_checkpoint
from stage2_fusion.methods import load_config
from stage2_fusion.train import build_for_training, restore_training_state

CPU = torch.device("cpu")
TINY = {"fusion": {"backbone": {"pretrained": "none", "layers": [1, 1, 1, 1], "base_width": 8, "nonlocal_blocks": [0, 1, 1, 0]},
                   "recipes": {"agw": {"warmup_epochs": 3, "milestones": [4]}}}}


def _objects():
    model, loss_fn, optimizer, scheduler, recipe = build_for_training(load_config("demo", overrides=TINY), "agw", 3, CPU)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)  # grows x2 after every finite step
    return model, loss_fn, optimizer, scheduler, scaler, recipe


def _step(model, loss_fn, optimizer, scaler, recipe, seed):
    g = torch.Generator().manual_seed(seed)
    inputs = {"vis": torch.randn(4, 3, 32, 16, generator=g), "ir": torch.randn(4, 3, 32, 16, generator=g)}
    labels = torch.tensor([0, 0, 1, 2, 0, 0, 1, 2])
    model.train()
    losses = loss_fn(model(inputs), labels, torch.arange(8) >= 4, recipe)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.step(optimizer)
    scaler.update()


def test_restore_training_state_continues_exactly(tmp_path):
    a = _objects()
    model, loss_fn, optimizer, scheduler, scaler, recipe = a
    for epoch in range(2):
        _step(model, loss_fn, optimizer, scaler, recipe, seed=epoch)
        scheduler.step()
    path = tmp_path / "last.pt"
    save_checkpoint(path, "reid", {"epoch": 2, "best_rank1": 12.5, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()})

    b = _objects()
    epoch, best = restore_training_state(load_checkpoint(path, "reid"), b[0], b[2], b[3], b[4])
    assert (epoch, best) == (2, 12.5)
    assert b[3].last_epoch == 2 and b[2].param_groups[1]["lr"] == optimizer.param_groups[1]["lr"]
    assert b[4].get_scale() == scaler.get_scale() == 2.0**12
    momentum_a = [optimizer.state[p]["momentum_buffer"] for p in model.parameters() if p in optimizer.state]
    momentum_b = [b[2].state[p]["momentum_buffer"] for p in b[0].parameters() if p in b[2].state]
    assert len(momentum_a) == len(momentum_b) > 0
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    for (name, pa), pb in zip(model.state_dict().items(), b[0].state_dict().values()):
        assert torch.equal(pa, pb), name

    # the third step (warm-up epoch 3 of 3) is the same whether the run was resumed or not
    _step(model, loss_fn, optimizer, scaler, recipe, seed=2)
    _step(b[0], b[1], b[2], b[4], b[5], seed=2)
    for (name, pa), pb in zip(model.state_dict().items(), b[0].state_dict().values()):
        assert torch.equal(pa, pb), name
    # and a fresh run that skipped the restore would not be
    c = _objects()
    _step(c[0], c[1], c[2], c[4], c[5], seed=2)
    assert not torch.equal(c[0].bnneck.classifier.weight, model.bnneck.classifier.weight)
