"""The cost of evaluation's statistics: one ROC AUC, and a patient bootstrap of a macro AUC, at test-set sizes.

    python benchmarks/bootstrap_cost.py [--rows 1000 10000 100000] [--findings 14] [--n-boot 200]

Times ``radlab.evaluation.metrics.roc_auc`` against scikit-learn's ``roc_auc_score`` (the reference) on the same
labels and scores (continuous scores, and scores rounded to 2 decimals for many ties), checks that the two
agree, then times ``n_boot`` patient-bootstrap resamples (``stats.bootstrap_ci``, 2 images per patient) of a
strict macro AUC over ``findings`` at each size: what every interval of ``radlab eval`` costs per task.

Measured on a shared 2-core machine (``--rows 1000 10000 --n-boot 100``), ms per AUC call, radlab vs
scikit-learn, and seconds of the 100-resample bootstrap of a 14-finding macro AUC:

    rows     scores   radlab ms  sklearn ms  bootstrap s   before (per-tie-group Python loop; same values)
    1000     continuous    0.11        2.43          0.3   2.26 ms, 2.4 s
    10000    continuous    1.10        4.55          2.2   21.64 ms, 22.0 s
    10000    2 decimals    0.91        4.25                2.19 ms
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from radlab.evaluation.metrics import macro_auc, roc_auc
from radlab.evaluation.stats import bootstrap_ci


def per_call(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-3 milliseconds per call of ``fn``."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1000


def size_rows(n: int, findings: int, n_boot: int, rng: np.random.Generator) -> list[str]:
    """The printed rows for ``n`` test rows: per score kind, ms per AUC call (ours, scikit-learn's) and, for
    continuous scores, the seconds of a ``n_boot``-resample patient bootstrap of the macro AUC."""
    labels = (rng.random((n, findings)) < 0.2).astype(float)
    scores = labels * 0.5 + rng.normal(size=labels.shape)
    rows = []
    for kind, s in (("continuous", scores[:, 0]), ("2 decimals", np.round(scores[:, 0], 2))):
        assert abs(roc_auc(labels[:, 0], s) - roc_auc_score(labels[:, 0], s)) < 1e-12
        repeats = max(1, 20_000 // n)
        ours = per_call(lambda s=s: roc_auc(labels[:, 0], s), repeats)
        reference = per_call(lambda s=s: roc_auc_score(labels[:, 0], s), repeats)
        bootstrap = ""
        if kind == "continuous":
            patients = np.repeat(np.arange(n // 2 + 1), 2)[:n].astype(str)
            start = time.perf_counter()
            bootstrap_ci(lambda idx: macro_auc(labels[idx], scores[idx], strict=True), patients, n_boot)
            bootstrap = f"{time.perf_counter() - start:.1f}"
        rows.append(f"{n:>8} {kind:>10} {ours:>10.2f} {reference:>11.2f} {ours / reference:>10.2f} {bootstrap:>12}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--findings", type=int, default=14)
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'rows':>8} {'scores':>10} {'radlab ms':>10} {'sklearn ms':>11} {'x sklearn':>10} "
          f"{'bootstrap s':>12}")
    for n in args.rows:
        print("\n".join(size_rows(n, args.findings, args.n_boot, rng)))


if __name__ == "__main__":
    main()
