"""Early stopping on a validation term, keeping the weights of the best validation step for export."""

from __future__ import annotations

import math
from collections.abc import Callable

from radlab.train.config import EarlyStoppingConfig
from radlab.train.state import cpu_copy


class EarlyStopper:
    """Tracks the best validation value; ``update`` returns True when patience has run out.

    With ``restore_best`` it also keeps ``snapshot()`` (a CPU copy of the model, objective and EMA states) taken
    at the best step, so the engine exports that step's encoder rather than the last one's. The snapshot is
    part of ``state_dict``, so a resumed run still exports the best step seen before it was interrupted (at
    the cost of a second copy of the weights in each training state)."""

    def __init__(self, cfg: EarlyStoppingConfig) -> None:
        self.cfg = cfg
        self.best = math.inf if cfg.mode == "min" else -math.inf
        self.bad = 0
        self.best_step: int | None = None
        self.snapshot: dict | None = None

    def improves(self, value: float) -> bool:
        if self.cfg.mode == "min":
            return value < self.best - self.cfg.min_delta
        return value > self.best + self.cfg.min_delta

    def update(self, value: float, step: int, snapshot: Callable[[], dict]) -> bool:
        """Record the validation ``value`` of ``step``; ``snapshot`` is called (on every rank: it may gather
        shards) only when the value improves and ``restore_best`` is set."""
        if self.improves(value):
            self.best, self.bad, self.best_step = value, 0, step
            if self.cfg.restore_best:
                self.snapshot = cpu_copy(snapshot())
        else:
            self.bad += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        """Patience has run out (also in a state a resumed run loaded: it does not train on)."""
        return self.bad >= self.cfg.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad, "best_step": self.best_step, "snapshot": self.snapshot}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = float(state["best"]), int(state["bad"])
        self.best_step = state["best_step"]
        self.snapshot = cpu_copy(state["snapshot"])  # on the CPU, where a state loaded onto the GPU put it
