"""Stage 2 optimisation: parameter groups, optimiser and learning-rate schedule of a recipe.

What the papers' training scripts do, as one schedule function and two builders:

* **parameter groups** — the new layers (a method's ``head_modules()``: AGW's BNNeck and
  classifier, TSME's feature and class blocks) learn at ``lr``; everything else (the
  ImageNet backbone) at ``lr * backbone_lr_mult`` (0.1 in AGW train.py, TSME train.py and
  MSO train.py: ``{'params': base_params, 'lr': 0.1 * args.lr}``);
* **optimiser** — SGD with momentum 0.9, Nesterov, weight decay 5e-4 (AGW, TSME), or Adam
  with weight decay 5e-4 (MSO train.py; its SGD line is commented out);
* **schedule** — a factor per epoch (0-based), the same for both groups:
  linear warm-up for ``epoch < warmup_epochs``, either AGW's ``(epoch + 1) / warmup_epochs``
  (``warmup_method = "agw"``; AGW train.py ``adjust_learning_rate``: ``lr * (epoch + 1) /
  10`` for epoch < 10) or ``f + (1 - f) * epoch / warmup_epochs`` from a start factor f
  (``"linear"``; MSCMNet's WarmupMultiStepLR, Hua-XC/MSCMNet:solver/lr_scheduler.py with
  warmup_factor 0.1: 0.1, 0.19, ..., 0.91), times
  ``gamma ** (number of milestones <= epoch)`` (AGW: x0.1 from epoch 20, x0.01 from 50;
  TSME: x0.1 at 20, 40, 60; MSO: x0.1 at 20, x0.01 at 25).

The training loop calls ``scheduler.step()`` once after each epoch, so during epoch ``e``
every group's learning rate is its base rate times ``lr_factor(e, ...)``, as the papers'
scripts set it at the start of each epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import UserError

OPTIMIZERS = ("sgd", "adam")


WARMUP_METHODS = ("agw", "linear")


def lr_factor(epoch: int, warmup_epochs: int, milestones: tuple[int, ...], gamma: float,
              warmup_method: str = "agw", warmup_factor: float = 0.1) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based).

    Args:
        epoch: 0-based epoch index.
        warmup_epochs: length of the linear warm-up (0: none).
        milestones: epochs from which one more factor ``gamma`` applies.
        gamma: decay factor per milestone.
        warmup_method: "agw" or "linear" (see the module docstring).
        warmup_factor: the "linear" warm-up's factor at epoch 0.

    Returns:
        the warm-up factor (if ``epoch < warmup_epochs``, else 1) times
        ``gamma ** #{m in milestones: epoch >= m}``.

    Raises:
        ValueError: an unknown ``warmup_method``.
    """
    if warmup_method not in WARMUP_METHODS:
        raise ValueError(f"warmup_method must be one of {WARMUP_METHODS}, got {warmup_method!r}")
    warm = 1.0
    if epoch < warmup_epochs:
        if warmup_method == "agw":
            warm = (epoch + 1) / warmup_epochs
        else:
            warm = warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    return warm * gamma ** sum(epoch >= m for m in milestones)


def param_groups(model: nn.Module, lr: float, backbone_mult: float) -> list[dict]:
    """Two parameter groups: ``[body at lr * backbone_mult, heads at lr]``.

    Heads are the parameters of ``model.head_modules()``; frozen parameters
    (``requires_grad=False``, e.g. BNNeck's bias) are left out of both.

    Returns:
        ``[{"params": body, "lr": lr * backbone_mult}, {"params": heads, "lr": lr}]``.
    """
    head_ids = {id(p) for m in model.head_modules() for p in m.parameters()}
    heads = [p for p in model.parameters() if id(p) in head_ids and p.requires_grad]
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return [{"params": body, "lr": lr * backbone_mult}, {"params": heads, "lr": lr}]


def build_optimizer(model: nn.Module, recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over :func:`param_groups` (group 0 body, group 1 heads).

    Args:
        recipe: :class:`common.config.RecipeConfig` (``optimizer``, ``lr``,
            ``backbone_lr_mult``, ``momentum``, ``weight_decay``, ``nesterov``).

    Raises:
        UserError: an unknown ``recipe.optimizer``.
    """
    groups = param_groups(model, recipe.lr, recipe.backbone_lr_mult)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                               nesterov=recipe.nesterov)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise UserError(f"recipe optimizer '{recipe.optimizer}' is unknown; use one of: {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` with the recipe's warm-up and milestones."""
    warmup, milestones, gamma = recipe.warmup_epochs, tuple(recipe.milestones), recipe.gamma
    method, factor = recipe.warmup_method, recipe.warmup_factor
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, warmup, milestones, gamma, method, factor))
