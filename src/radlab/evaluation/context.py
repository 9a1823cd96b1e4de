"""What every evaluation task receives: one encoder, one record table with patient-level splits, the task's
options, and the bootstrap settings every interval uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from radlab.data.records import RecordTable
from radlab.evaluation.features import FeatureCache
from radlab.evaluation.stats import DEFAULT_N_BOOT, Statistic, bootstrap_ci
from radlab.models.encoder import RadEncoder
from radlab.registry import Registry

TASKS: Registry = Registry("evaluation task")
SPLITS = ("train", "val", "test")
T = TypeVar("T", np.ndarray, torch.Tensor)


class TaskSkipped(RuntimeError):
    """A task that cannot run on this encoder or data (the reason goes into the results JSON)."""


@dataclass
class EvalContext:
    encoder: RadEncoder
    table: RecordTable
    label_names: list[str]
    seed: int = 0
    batch_size: int = 64
    features: FeatureCache = field(default_factory=FeatureCache)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_boot: int = DEFAULT_N_BOOT
    task: str = ""
    statistics: dict[str, tuple[Statistic, np.ndarray, tuple[str, ...]]] = field(default_factory=dict)
    read: set[tuple[str, str]] = field(default_factory=set)  # (task, option key) pairs a task asked for
    _image_ok: np.ndarray | None = None

    def option(self, key: str, default: Any) -> Any:
        """The current task's option ``key`` (from ``--option task.key=value``), else ``default``; where the
        default is a number, the value must be one of its kind (an error names ``task.key``)."""
        self.read.add((self.task, key))
        value = self.options.get(self.task, {}).get(key, default)
        if not isinstance(default, int | float) or isinstance(default, bool) or value is default:
            return value
        number = _as_number(value, whole=isinstance(default, int))
        if number is None:
            raise ValueError(f"option {self.task}.{key}={value!r}: expected {'a whole' if isinstance(default, int) else 'a'} "
                             f"number (default {default!r})")
        return number

    def unread_options(self) -> list[str]:
        """``task.key`` of the options given that no task asked for (a typo, or an option of another task)."""
        return [f"{task}.{key}" for task, keys in self.options.items() for key in keys if (task, key) not in self.read]

    def option_list(self, key: str, default: Any) -> list:
        """A list option given as a YAML list, a comma-separated string or a single value."""
        value = self.option(key, default)
        if value is None:
            return []
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value) if isinstance(value, list | tuple) else [value]

    def images_present(self) -> np.ndarray:
        """Rows whose image file exists (a table may name images that are not on disk)."""
        if self._image_ok is None:
            has = self.table.has_images()
            self._image_ok = np.array([bool(h) and self.table.image_path(i).exists() for i, h in enumerate(has)])
        return self._image_ok

    def rows(self, split: str) -> np.ndarray:
        """Rows of a split with an image on disk."""
        return np.flatnonzero((self.table.frame["split"] == split).to_numpy() & self.images_present())

    def text_rows(self, split: str) -> np.ndarray:
        """Rows of a split with a non-empty report (images not needed)."""
        frame = self.table.frame
        return np.flatnonzero((frame["split"] == split).to_numpy() & (frame["report"].str.strip() != "").to_numpy())

    def require_images(self, splits: tuple[str, ...] = SPLITS) -> None:
        missing = [s for s in splits if not len(self.rows(s))]
        if missing:
            raise TaskSkipped(f"no images on disk in split(s) {missing}: this task needs images")

    def image_features(self, split: str, kind: str = "pooled") -> np.ndarray:
        return self.features.get(self.encoder, self.table, self.rows(split), kind, self.batch_size)

    def text_features(self, texts: list[str], kind: str = "embedding") -> np.ndarray:
        if not self.encoder.has_text:
            raise TaskSkipped("this encoder has no text tower")
        return self.features.text(self.encoder, texts, self.batch_size, kind)

    def labels(self, split: str) -> np.ndarray:
        return self.table.labels(self.label_names)[self.rows(split)]

    def patients(self, rows: np.ndarray) -> np.ndarray:
        return self.table.frame["patient_id"].to_numpy()[rows].astype(str)

    def interval(self, name: str, fn: Statistic, patients: np.ndarray, over: Sequence[str] = (),
                 level: float = 0.95) -> dict:
        """Patient-bootstrap CI of ``fn(idx)`` over evaluated rows; kept for paired comparisons, which pair
        two encoders only where ``over`` (e.g. the findings a macro AUC averages) is the same for both."""
        self.statistics[f"{self.task}/{name}"] = (fn, np.asarray(patients), tuple(over))
        return bootstrap_ci(fn, patients, self.n_boot, self.seed, level).as_dict()


def evaluable_labels(table: RecordTable, names: list[str]) -> list[str]:
    """Labels with both positives and negatives in the test split (others have no defined AUC)."""
    test = table.split("test")
    values = test.labels(names)
    return [n for k, n in enumerate(names) if (values[:, k] == 1).any() and (values[:, k] == 0).any()]


def nonzero(std: T) -> T:
    """Standard deviations (numpy or torch) with the near-zero ones of features constant in train read as 1, as
    scikit-learn's StandardScaler does, so a feature that varies only at test time is not blown up."""
    return std + (std < 1e-8) * (1 - std)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small heads on one thread: their ops are too small to gain from threads and lose badly to
    thread contention on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_number(value: Any, whole: bool) -> int | float | None:
    """``value`` as a number (YAML reads 1e-4 as a string), an int where ``whole``; None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not whole:
        return number
    return int(number) if number.is_integer() else None
