"""Timing a unit of work and printing figures side by side with ratios to a reference run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Measurement:
    name: str
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


def measure(name: str, work: Callable[[], int], repeat: int = 3, warmup: int = 1) -> Measurement:
    """Run ``work`` (which returns how many items it processed) and keep the fastest of ``repeat`` runs."""
    for _ in range(warmup):
        work()
    best: Measurement | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        items = work()
        elapsed = time.perf_counter() - start
        if best is None or elapsed / max(items, 1) < best.seconds / max(best.items, 1):
            best = Measurement(name, items, elapsed)
    assert best is not None
    return best


def ratio_table(title: str, results: list[Measurement], reference: str, unit: str = "items/s",
                console: Console | None = None) -> Table:
    """Print each measurement's rate and its ratio to the reference measurement."""
    ref = next(r for r in results if r.name == reference)
    table = Table(title=title)
    for col in ("run", unit, f"x {reference}"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for r in results:
        table.add_row(r.name, f"{r.rate:,.1f}", f"{r.rate / ref.rate:.2f}")
    (console or Console()).print(table)
    return table
