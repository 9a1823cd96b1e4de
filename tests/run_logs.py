"""Reading what a training run logged, for the tests that check learning happened."""

from __future__ import annotations

import json
from pathlib import Path


def logged(out: Path) -> list[dict]:
    """The records of ``out/metrics.jsonl``, one per logged step, in order."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def loss_curve(out: Path) -> list[float]:
    """The total loss at each logged step of the run in ``out``."""
    return [record["loss"] for record in logged(out)]
