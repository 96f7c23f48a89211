"""What a run shows and keeps: progress bars, messages, TensorBoard events, metrics.jsonl.

Messages and progress bars go to stderr (rich); stdout is kept for results (tables and
``--json`` objects), so that ``pipeline ... --json | jq`` works.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    """Print one status line to stderr, never wrapped (a path or a deprecation stays on its line)."""
    console.print(message, soft_wrap=True)


class _RateColumn(ProgressColumn):
    """Throughput in the task's unit per second (images/s, steps/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"? {unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {unit}/s", style="progress.data.speed")


class _PostfixColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(task.fields.get("postfix", ""), style="dim")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def _plain_progress(total: int, description: str, unit: str, interval: float) -> Iterator[Callable[..., None]]:
    """Progress for logs and batch jobs: one plain line every ``interval`` seconds."""
    start = time.perf_counter()
    state = {"done": 0, "postfix": "", "last": start}

    def line(final: bool = False) -> None:
        elapsed = time.perf_counter() - start
        rate = state["done"] / elapsed if elapsed > 0 else 0.0
        eta = (total - state["done"]) / rate if rate > 0 else float("nan")
        pct = 100.0 * state["done"] / total if total else 100.0
        eta_text = "done" if final else ("?" if math.isnan(eta) else _duration(eta))
        post = f", {state['postfix']}" if state["postfix"] else ""
        console.print(f"{description}: {state['done']}/{total} {unit} ({pct:.0f}%), {rate:,.1f} {unit}/s, "
                      f"elapsed {_duration(elapsed)}, eta {eta_text}{post}", soft_wrap=True)

    def advance(n: int = 1, postfix: str | None = None) -> None:
        state["done"] += n
        if postfix is not None:
            state["postfix"] = postfix
        now = time.perf_counter()
        if now - state["last"] >= interval:
            state["last"] = now
            line()

    yield advance
    line(final=True)


def progress_interval() -> float:
    """Seconds between plain progress lines when output is not a terminal
    (``$VIREID_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("VIREID_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "img", enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar with count, rate (``unit``/s), elapsed time and ETA.

    On a terminal it is a live rich bar; when output goes to a file or a batch system's
    log (not a terminal) it prints one plain line every :func:`progress_interval` seconds
    instead ("stage 2 agw: 1280/40960 img (3%), 95.2 img/s, elapsed 0:00:13, eta 0:06:56,
    epoch 1/20 step 20/80 loss 7.412 acc 0.05"), and a last one when done.

    Args:
        total: units to do; description: label; unit: "img", "step", ...
        enabled: False yields a no-op (non-zero distributed ranks, quiet evaluation).

    Yields:
        ``advance(n=1, postfix="")``: move the bar by ``n`` units; ``postfix`` is a short
        status text shown after the bar (e.g. the current loss).
    """
    if not enabled:
        yield lambda n=1, postfix=None: None
        return
    if not console.is_terminal:
        with _plain_progress(total, description, unit, progress_interval()) as advance:
            yield advance
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        _PostfixColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, unit=unit, postfix="")

        def advance(n: int = 1, postfix: str | None = None) -> None:
            if postfix is None:
                progress.advance(task, n)
            else:
                progress.update(task, advance=n, postfix=postfix)

        yield advance


class RunLog:
    """TensorBoard scalars/images plus a ``metrics.jsonl`` line per logged step.

    Args:
        log_dir: the run directory; events go to ``log_dir/tb/<stage>``, records to
            ``log_dir/metrics.jsonl`` (appended: a resumed run continues the same file).
        stage: a short name ("gan", "fusion") prefixed to every record.
        enabled: False on non-zero distributed ranks, making every call a no-op.
    """

    def __init__(self, log_dir: Path, stage: str, enabled: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.stage = stage
        self.enabled = enabled
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when logging

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir / "tb" / stage))
            self._jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: dict[str, float], **fields: Any) -> None:
        """Log scalars under ``<stage>/<name>`` at ``step`` and append one JSON record."""
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        for name, value in clean.items():
            self._writer.add_scalar(f"{self.stage}/{name}", value, step)
        record = {"stage": self.stage, "step": step, "time": round(time.time(), 3), **fields, **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def image_grid(self, tag: str, grid, step: int) -> None:
        """Log a (3, H, W) float [0, 1] image (e.g. from torchvision.utils.make_grid)."""
        if self.enabled:
            self._writer.add_image(f"{self.stage}/{tag}", grid, step)

    def histogram(self, tag: str, values, step: int) -> None:
        """Log a histogram of ``values`` (1-D array) under ``<stage>/<tag>``."""
        if self.enabled and len(values):
            self._writer.add_histogram(f"{self.stage}/{tag}", values, step)

    def embedding(self, tag: str, features, metadata: list[list[str]], header: list[str], step: int) -> None:
        """Log features (N, D) to TensorBoard's embedding projector, one metadata row per point
        (e.g. identity and modality, to colour the points by)."""
        if self.enabled and len(features):
            self._writer.add_embedding(features, metadata=metadata, metadata_header=header, tag=f"{self.stage}/{tag}", global_step=step)

    def close(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._jsonl.close()
            self._writer = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
