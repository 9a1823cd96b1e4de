"""Progress of long work, on stderr. On a terminal: a live rich bar. With stderr redirected (a cluster job's
log file, nohup), rich would draw nothing until the end, so a plain line is written every ``interval``
seconds instead, and a last one when the work ends; work shorter than the interval writes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn, track

CONSOLE = Console(stderr=True)
INTERVAL_S = 30.0
T = TypeVar("T")


class ProgressLines:
    """Plain progress lines: ``description: done/total, elapsed, ETA[, fields]``."""

    def __init__(self, description: str, total: int, interval: float | None = None,
                 console: Console = CONSOLE) -> None:
        self.description, self.total, self.console = description, total, console
        self.interval = INTERVAL_S if interval is None else interval
        self.started = self.last = time.monotonic()
        self.first: int | None = None
        self.written = 0

    def update(self, done: int, **fields: float) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done - 1
        final = done >= self.total
        if now - self.last < self.interval and not (final and self.written):
            return
        self.last, self.written = now, self.written + 1
        elapsed = now - self.started
        rate = (done - self.first) / max(elapsed, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        extra = "".join(f", {k} {v:.4g}" for k, v in fields.items())
        self.console.print(f"{self.description}: {done}/{self.total}, {_clock(elapsed)} elapsed, "
                           f"ETA {_clock(eta)}{extra}", highlight=False, soft_wrap=True)


def tracked(items: Iterable[T], total: int, description: str, interval: float | None = None) -> Iterator[T]:
    """Iterate ``total`` items with a bar on a terminal, or plain lines (see ``ProgressLines``) otherwise."""
    if CONSOLE.is_terminal:
        yield from track(items, description=description, total=total, console=CONSOLE, transient=True)
        return
    lines = ProgressLines(description, total, interval)
    for done, item in enumerate(items, 1):
        yield item
        lines.update(done)


class StepProgress:
    """A training run's progress on its main rank: a rich bar (steps, rate, last logged loss, ETA) on a
    terminal, plain lines (``ProgressLines``) otherwise, nothing when not ``enabled``. A context manager."""

    def __init__(self, name: str, total: int, start: int, enabled: bool) -> None:
        self.lines = ProgressLines(name, total) if enabled and not CONSOLE.is_terminal else None
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[rate]:.2f} step/s"), TextColumn("loss {task.fields[loss]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=CONSOLE, disable=not enabled or self.lines is not None)
        self.task = self.bar.add_task(name, total=total, completed=start, rate=0.0, loss="-")

    def __enter__(self) -> StepProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, step: int, rate: float, loss: float | None) -> None:
        """``loss`` is None until the first logged step (shown as "-", left out of plain lines)."""
        self.bar.update(self.task, completed=step, rate=rate, loss="-" if loss is None else f"{loss:.4f}")
        if self.lines is not None:
            self.lines.update(step, **({} if loss is None else {"loss": loss}))


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
