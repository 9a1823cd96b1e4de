"""A training run's metrics: one JSON line per record in ``<out>/metrics.jsonl`` and the same values as
TensorBoard scalars in ``<out>/tb``, written by the main rank only."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Records like ``{"step": 10, "loss": 0.7, ...}`` go to both files; ``append`` keeps the lines of the
    run being resumed. On other ranks (``main`` false) it writes nothing. A context manager."""

    def __init__(self, out: Path, main: bool, append: bool) -> None:
        self.writer = SummaryWriter(str(out / "tb")) if main else None
        self.metrics = (out / "metrics.jsonl").open("a" if append else "w") if main else None

    def write(self, record: dict, prefix: str) -> None:
        """One record; TensorBoard tags are ``prefix/name`` (a ``val_`` prefix of a name is dropped)."""
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(f"{prefix}/{key.removeprefix('val_')}", value, record["step"])

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.writer.close()
