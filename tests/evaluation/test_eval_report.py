"""The results store: rows say which data, label set and seed they come from, and a table mixing them warns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radlab.evaluation.context import nonzero
from radlab.evaluation.metrics import roc_auc
from radlab.evaluation.report import append_run, render


def _run(labels: list[str], seed: int, auc: float) -> dict:
    return {"encoder": "enc", "seed": seed, "data_hash": "abc", "code_version": "1", "labels": labels,
            "tasks": {"linear_probe": {"macro_auc": auc, "macro_auc_ci": {"ci_low": 0.7, "ci_high": 0.8}}}}


def test_rows_carry_label_set_and_seed_and_mixed_tables_warn(tmp_path: Path) -> None:
    store = tmp_path / "store.jsonl"
    append_run(_run(["cardiomegaly", "edema"], 1, 0.75), store)
    assert "Warning" not in render(store).read_text()
    append_run(_run(["cardiomegaly"], 2, 0.62), store)
    text = render(store).read_text()
    assert "Warning: these rows come from 2 different (data, label set) pairs" in text
    rows = [line for line in text.splitlines() if line.startswith("| enc |")]
    assert "| 2 (" in rows[0] and "| 1 |" in rows[0] and "| 1 (" in rows[1] and "| 2 |" in rows[1]


def test_scales_of_constant_features_stay_one_and_diverged_scores_are_refused() -> None:
    np.testing.assert_array_equal(nonzero(np.array([0.0, 2.0, 1e-12])), [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]))
