"""Progress of long work, on stderr. On a terminal: a live rich bar. With stderr redirected (a cluster job's
log file, nohup), rich would draw nothing until the end, so a plain line is written every ``interval``
seconds instead, and a last one when the work ends; work shorter than the interval writes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track

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


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
