"""The non-finite guard of both training stages: losses every step, weights every epoch.

A NaN or infinite loss (a diverging run, a corrupt batch, an fp16 overflow the scaler did not
catch) must neither poison the weights nor kill an hours-long run at once: the step is
skipped (no backward, no optimiser step), logged, and counted; after ``limit`` skipped steps
the run stops with a clear message. Checkpoints are written at the end of each epoch, so the
last good ``last.pt`` is kept and a fixed run resumes from it (fast-reid's
``engine/train_loop.py`` raises on the first NaN instead).

A finite loss does not prove finite weights: the forward pass of a skipped step has already
updated the BatchNorm running statistics (train mode normalises with the batch's own
statistics, so the loss stays finite while the running ones, used at test time, are NaN),
and an infinite gradient of a finite loss makes an fp32 step write inf into the weights.
Nor do finite weights prove finite test features: eval mode normalises with the running
statistics, and when those no longer fit the weights, activations can overflow (MSCMNet on a
tiny SYSU-MM01 copy: layer3 at 1e36 in eval mode, NaN features, every weight finite). So
:meth:`NonFiniteGuard.check_state` looks at every parameter and buffer, and at the eval-mode
features of a few training images, at the end of each epoch, before anything is evaluated or
saved, and stops the run with one line naming the first bad tensor and the last good
checkpoint, which it keeps (MSCMNet on a small SYSU-MM01 copy otherwise trained to the end
and `pipeline test` then refused its NaN test features).

Checking costs one device synchronisation per step (the loss value is read on the host);
under DistributedDataParallel the decision is all-reduced so that every rank skips the same
step (a rank that skipped its backward alone would leave the others waiting).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import UserError
from common.runlog import info


class NonFiniteGuard:
    """Counts and skips steps whose loss is NaN/inf; aborts after ``limit`` of them.

    Args:
        stage: name used in messages (e.g. "stage 2 (agw)").
        limit: skipped steps allowed over the whole run (0: abort on the first).
        checkpoint: the file holding the last good state (``last.pt``), named in the abort
            message if it exists by then.
        distributed: all-reduce the decision across ranks.

    Attributes:
        skipped: steps skipped so far (this process, this run).
        skipped_in_epoch: steps skipped since the last :meth:`start_epoch`.
    """

    def __init__(self, stage: str, limit: int, checkpoint: Path, *, distributed: bool = False) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.stage, self.limit, self.checkpoint, self.distributed = stage, limit, checkpoint, distributed
        self.skipped = 0
        self.skipped_in_epoch = 0

    def start_epoch(self) -> None:
        self.skipped_in_epoch = 0

    def finite(self, *losses: torch.Tensor, epoch: int, step: int) -> bool:
        """True when every loss is finite; otherwise count, log and (past the limit) abort.

        Args:
            losses: scalar tensors of this step (e.g. the total loss).
            epoch, step: 0-based position, for the messages.

        Raises:
            UserError: more than ``limit`` skipped steps.
        """
        ok = torch.stack([torch.isfinite(x.detach().float()).all() for x in losses]).all().float()
        if self.distributed:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        if bool(ok.item()):  # the one host sync per step
            return True
        self.skipped += 1
        self.skipped_in_epoch += 1
        info(f"{self.stage}: non-finite loss at epoch {epoch + 1} step {step + 1}: step skipped "
             f"({self.skipped} skipped, at most {self.limit})")
        if self.skipped > self.limit:
            kept = (f"the last good state is kept in {self.checkpoint}" if Path(self.checkpoint).exists()
                    else "no epoch had finished, so no checkpoint was written")
            raise UserError(
                f"{self.stage}: the loss was NaN/inf in {self.skipped} steps (last at epoch {epoch + 1} step {step + 1}), more than "
                f"the {self.limit} allowed; {kept}; lower the learning rate or check the data, then train again"
            )
        return False

    def check_state(self, model: nn.Module, *, epoch: int, probe: torch.Tensor | None = None) -> None:
        """Stop the run if a parameter or floating-point buffer of ``model``, or the ``probe``
        features, are NaN/inf.

        Call it at the end of an epoch, before evaluating or saving: the checkpoint of the
        previous epoch is then the last good one, and it is kept. ``probe`` is what the model
        computes in eval mode on a few training images: with finite weights and statistics,
        eval-mode activations can still overflow when the running statistics no longer fit
        the weights (seen with MSCMNet: layer3 at 1e36, then NaN test features). Costs one
        device synchronisation.

        Args:
            model: the trained module (unwrapped from DistributedDataParallel).
            epoch: 0-based epoch that just finished, for the message.
            probe: eval-mode test features of some training images, or None.

        Raises:
            UserError: naming the first non-finite tensor (or the test-mode features) and the
                checkpoint kept.
        """
        tensors = [(name, t) for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
        if probe is not None:
            tensors.append(("the test-mode features of training images (eval mode overflows)", probe))
        if not tensors:
            return
        finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors])
        if bool(finite.all()):  # the one host sync per epoch
            return
        first = tensors[int((~finite).nonzero()[0])][0]
        kept = (f"the last good state (after epoch {epoch}) is kept in {self.checkpoint}" if Path(self.checkpoint).exists()
                else "no earlier epoch had finished, so no checkpoint was written")
        raise UserError(
            f"{self.stage}: the weights, BatchNorm statistics or test-mode features became NaN/inf during epoch {epoch + 1} "
            f"(first: {first}; {self.skipped} step(s) with a NaN/inf loss skipped so far); {kept}; lower the learning rate or "
            "check the data, then train again"
        )
