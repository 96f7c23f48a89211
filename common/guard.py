"""The non-finite loss guard of both training stages.

A NaN or infinite loss (a diverging run, a corrupt batch, an fp16 overflow the scaler did not
catch) must neither poison the weights nor kill an hours-long run at once: the step is
skipped (no backward, no optimiser step), logged, and counted; after ``limit`` skipped steps
the run stops with a clear message. Checkpoints are written at the end of each epoch, so the
last good ``last.pt`` is kept and a fixed run resumes from it (fast-reid's
``engine/train_loop.py`` raises on the first NaN instead).

Checking costs one device synchronisation per step (the loss value is read on the host);
under DistributedDataParallel the decision is all-reduced so that every rank skips the same
step (a rank that skipped its backward alone would leave the others waiting).
"""

from __future__ import annotations

from pathlib import Path

import torch

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
