"""A training run's metrics: one JSON line per record in ``<out>/metrics.jsonl`` and the same values as
TensorBoard scalars in ``<out>/tb``, written by the main rank only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


class RunLog:
    """Records like ``{"step": 10, "loss": 0.7, ...}`` go to both files. ``after``: the step a resumed run
    starts from; the lines of the run up to it are kept, later ones (logged after its last saved state, and
    logged again now) dropped. On other ranks (``main`` false) it writes nothing. A context manager."""

    def __init__(self, out: Path, main: bool, after: int | None = None) -> None:
        # purge_step: TensorBoard drops the earlier session's points from the resumed step on, as the file below
        self.writer = SummaryWriter(str(out / "tb"), purge_step=None if after is None else after + 1) if main else None
        path = out / "metrics.jsonl"
        kept = kept_lines(path, after) if main and after is not None and path.exists() else []
        self.metrics = path.open("w") if main else None
        if self.metrics is not None and kept:
            self.metrics.write("\n".join(kept) + "\n")

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



def kept_lines(path: Path, after: int) -> list[str]:
    """The lines of an interrupted run's metrics file up to step ``after``; a line that does not parse (the
    last one, cut short by a crash or a full disk) is dropped with a logged count."""
    kept, broken = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            step = json.loads(line)["step"] if line.strip() else None
        except (ValueError, KeyError, TypeError):
            broken += 1
            continue
        if step is not None and step <= after:
            kept.append(line)
    if broken:
        log.warning("%s: dropped %d line(s) that do not parse (a write cut short)", path, broken)
    return kept
