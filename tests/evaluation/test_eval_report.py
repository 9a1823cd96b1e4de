"""The results store: rows say which data, label set and seed they come from, and a table mixing them warns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radlab.evaluation.context import nonzero
from radlab.evaluation.metrics import roc_auc
from radlab.evaluation.report import _bar_label, append_run, render
from radlab.evaluation.runner import headline, subgroup_lines


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


def test_paired_differences_and_demographics_are_reported_and_each_metric_gets_its_own_panel(tmp_path: Path) -> None:
    store = tmp_path / "store.jsonl"
    run = _run(["cardiomegaly"], 0, 0.75)
    run["tasks"]["demographics"] = {"sex": {"auc": 0.9, "auc_ci": {"ci_low": 0.85, "ci_high": 0.94}},
                                    "age": {"mae": 11.2}}
    run["tasks"]["retrieval"] = {"mean_R@1": 0.05}
    run["baseline"] = {"encoder": "random init", "tasks": {"linear_probe": {"macro_auc": 0.70}}}
    run["paired_difference"] = {
        "linear_probe/macro_auc": {"difference": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_value": 0.002},
        "retrieval/R@1": {"difference": -0.01, "ci_low": -0.02, "ci_high": -0.004, "p_value": 0.0, "n_boot": 500,
                          "n_valid": 400},
        "kshot/macro_auc": {"difference": None, "ci_low": None, "ci_high": None, "p_value": None, "n_boot": 500},
        "zero_shot/macro_auc": {"unpaired": "A and B average different findings"}}
    append_run(run, store)
    text = render(store).read_text()
    assert "## Paired differences" in text
    assert "| enc | random init | linear_probe/macro_auc | +0.050 | [+0.020, +0.080] | 0.002 |" in text
    assert "| retrieval/R@1 | -0.010 | [-0.020, -0.004] | < 0.005 |" in text, "two-sided: 2 / 400 defined resamples"
    assert "| kshot/macro_auc | - | - | - |" in text, "undefined on the full data: shown, not a crash"
    assert "zero_shot" not in text
    with Image.open(tmp_path / "store.png") as image:
        assert image.width == round(2.8 * 4 * 120), "panels: linear probe, sex AUC, age MAE, retrieval"
    assert "| enc | demographics | sex auc | 0.900 | [0.850, 0.940] |" in text
    assert "| enc | demographics | age mae | 11.200 | - |" in text
    rows = [{"encoder": "enc", "seed": s} for s in (0, 1)] + [{"encoder": "other", "seed": 0}]
    assert [_bar_label(r, rows) for r in rows] == ["enc (seed 0)", "enc (seed 1)", "other"]


def test_console_headlines_name_each_metric_with_its_interval() -> None:
    assert headline({"macro_auc": 0.8, "macro_auc_ci": {"ci_low": 0.75, "ci_high": 0.85}}) == \
        "macro_auc 0.800 [0.750, 0.850]"
    assert headline({"sex": {"auc": 0.9, "auc_ci": {"ci_low": 0.85, "ci_high": 0.95}}, "age": {"mae": 11.25}}) == \
        "sex auc 0.900 [0.850, 0.950], age mae 11.250"
    assert headline({"skipped": "no images"}) == "skipped (no images)"
    assert headline({"n": 3}) == "done"


def test_subgroups_read_in_the_console_and_the_report(tmp_path: Path) -> None:
    ci = {"ci_low": 0.7, "ci_high": 0.9}
    sexes = {"groups": {"F": {"n_patients": 40, "macro_auc": 0.8, "macro_auc_ci": ci},
                        "M": {"n_patients": 30, "macro_auc": 0.75, "macro_auc_ci": ci}},
             "best": "F", "worst": "M", "gap": 0.05, "gap_ci": {"ci_low": -0.02, "ci_high": 0.12}}
    ages = {"groups": {"<40": {"n_patients": 4}}, "skipped": "fewer than two groups with at least 10 patients"}
    metrics = {"macro_auc": 0.78, "subgroups": {"sex": sexes, "age": ages}}
    assert subgroup_lines(metrics) == [
        "  sex: F 0.800 [0.700, 0.900], M 0.750 [0.700, 0.900]; gap F - M +0.050 [-0.020, +0.120]",
        "  age: not compared (fewer than two groups with at least 10 patients)"]
    baseline = {"encoder": "base", "tasks": {"knn": {"macro_auc": 0.7, "subgroups": {"age": ages}}}}
    store = append_run({"encoder": "enc", "tasks": {"knn": metrics}, "baseline": baseline}, tmp_path / "runs.jsonl")
    text = render(store).read_text()
    assert "| base | knn | age=<40 | 4 | - | - |" in text
    assert "| enc | knn | sex=M | 30 | 0.750 | [0.700, 0.900] |" in text
    assert "| enc | knn | sex gap | | F - M: +0.050 | [-0.020, +0.120] |" in text
    assert "| enc | knn | age=<40 | 4 | - | - |" in text and "| age gap | | fewer than two groups" in text
