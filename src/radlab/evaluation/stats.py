"""Patient-level bootstrap: confidence intervals for one encoder, paired differences between two.

A statistic is a function of row indices into the evaluated rows (``fn(idx) -> float``); a bootstrap
sample draws patients with replacement and takes all rows of each drawn patient, so correlated images of
one patient never straddle the resampling unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]
DEFAULT_N_BOOT = 1000


def patient_samples(patients: Sequence[str] | np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """``n_boot`` row-index arrays, each the rows of patients drawn with replacement (seeded)."""
    codes, inverse = np.unique(np.asarray(patients), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(codes)))
    ends = np.append(starts[1:], len(order))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(codes), len(codes))
        samples.append(np.concatenate([order[starts[p]:ends[p]] for p in drawn]))
    return samples


def _safe(fn: Statistic, idx: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(fn(idx))
        except ValueError:
            return float("nan")
    return value


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [alpha, 100 - alpha])
    return float(lo), float(hi)


@dataclass
class Interval:
    """A point estimate with a percentile bootstrap interval; ``n_valid`` counts usable resamples."""

    estimate: float
    low: float
    high: float
    n_boot: int
    n_valid: int
    seed: int
    level: float = 0.95

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "ci_low": self.low, "ci_high": self.high, "level": self.level,
                "n_boot": self.n_boot, "n_valid": self.n_valid, "seed": self.seed, "unit": "patient"}


def bootstrap_ci(fn: Statistic, patients: Sequence[str] | np.ndarray, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile CI of ``fn`` over patient resamples; resamples where ``fn`` is undefined are dropped."""
    estimate = _safe(fn, np.arange(len(patients)))
    values = np.array([_safe(fn, idx) for idx in patient_samples(patients, n_boot, seed)])
    lo, hi = _interval(values, level)
    return Interval(estimate, lo, hi, n_boot, int((~np.isnan(values)).sum()), seed, level)


def paired_bootstrap(fn_a: Statistic, fn_b: Statistic, patients: Sequence[str] | np.ndarray,
                     n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """CI of A minus B over the same patient resamples, and a two-sided bootstrap p-value for zero."""
    full = np.arange(len(patients))
    estimate = _safe(fn_a, full) - _safe(fn_b, full)
    diffs = np.array([_safe(fn_a, idx) - _safe(fn_b, idx) for idx in patient_samples(patients, n_boot, seed)])
    lo, hi = _interval(diffs, level)
    valid = diffs[~np.isnan(diffs)]
    p = min(1.0, 2 * min((valid <= 0).mean(), (valid >= 0).mean())) if len(valid) else float("nan")
    return {"difference": estimate, "ci_low": lo, "ci_high": hi, "p_value": float(p), "level": level,
            "n_boot": n_boot, "n_valid": int(len(valid)), "seed": seed, "unit": "patient"}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation over seeds (NaN entries dropped)."""
    array = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if not len(array):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": int(len(array))}
