"""Patient-level bootstrap: whole patients are resampled, results are seeded, paired differences behave."""

from __future__ import annotations

import numpy as np
import pytest

from radlab.evaluation.metrics import roc_auc
from radlab.evaluation.stats import bootstrap_ci, mean_std, paired_bootstrap, patient_samples


def test_samples_take_all_rows_of_each_drawn_patient() -> None:
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    for idx in patient_samples(patients, 50, seed=3):
        drawn = patients[idx]
        for p in np.unique(drawn):
            assert (drawn == p).sum() % (patients == p).sum() == 0
        assert len(np.unique(patients[idx])) <= 3
    again = patient_samples(patients, 50, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, patient_samples(patients, 50, seed=3), strict=True))


def test_interval_brackets_the_estimate_and_records_settings() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(size=300)
    patients = np.repeat(np.arange(100), 3).astype(str)
    ci = bootstrap_ci(lambda i: roc_auc(y[i], s[i]), patients, n_boot=300, seed=7).as_dict()
    assert ci["ci_low"] < ci["estimate"] < ci["ci_high"]
    assert ci["n_boot"] == 300 and ci["seed"] == 7 and ci["unit"] == "patient"
    assert ci == bootstrap_ci(lambda i: roc_auc(y[i], s[i]), patients, n_boot=300, seed=7).as_dict()


def test_patient_clustering_widens_the_interval() -> None:
    """Perfectly correlated images per patient: resampling images would understate the uncertainty."""
    rng = np.random.default_rng(1)
    per_patient = rng.normal(size=40)
    values = np.repeat(per_patient, 10)
    patients = np.repeat(np.arange(40), 10).astype(str)
    by_patient = bootstrap_ci(lambda i: values[i].mean(), patients, 400, 0)
    by_image = bootstrap_ci(lambda i: values[i].mean(), np.arange(400).astype(str), 400, 0)
    assert (by_patient.high - by_patient.low) > 2 * (by_image.high - by_image.low)


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    good, bad = y + rng.normal(size=400) * 0.5, y + rng.normal(size=400) * 3
    patients = np.repeat(np.arange(200), 2).astype(str)
    better = paired_bootstrap(lambda i: roc_auc(y[i], good[i]), lambda i: roc_auc(y[i], bad[i]), patients, 300, 0)
    assert better["ci_low"] > 0 and better["p_value"] < 0.05
    same = paired_bootstrap(lambda i: roc_auc(y[i], good[i]), lambda i: roc_auc(y[i], good[i]), patients, 100, 0)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0


def test_undefined_resamples_are_dropped() -> None:
    y = np.array([1, 0, 0, 0])
    ci = bootstrap_ci(lambda i: roc_auc(y[i], np.arange(4.0)[i]), np.array(["a", "b", "c", "d"]), 200, 0)
    assert 0 < ci.n_valid < 200


def test_mean_std() -> None:
    assert mean_std([1.0, 3.0, float("nan")]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2)), "n": 2}


def test_statistics_over_different_findings_are_not_paired() -> None:
    from radlab.evaluation.context import EvalContext
    from radlab.evaluation.runner import compare_contexts

    patients = np.repeat(np.arange(20).astype(str), 2)
    a, b = (EvalContext(None, None, [], n_boot=50) for _ in range(2))  # type: ignore[arg-type]
    for ctx, over in ((a, ["cardiomegaly", "edema"]), (b, ["cardiomegaly"])):
        ctx.task = "zero_shot"
        ctx.interval("macro_auc", lambda idx: float(len(idx)), patients, over=over)
        ctx.task = "linear_probe"
        ctx.interval("macro_auc", lambda idx: float(len(idx)), patients, over=["cardiomegaly"])
    paired = compare_contexts(a, b)
    assert paired["zero_shot/macro_auc"]["unpaired"] and paired["zero_shot/macro_auc"]["b_over"] == ["cardiomegaly"]
    assert paired["linear_probe/macro_auc"]["difference"] == 0.0


def test_statistics_obtained_differently_are_not_paired() -> None:
    """Zero-shot by prompts (A) against by a label head (B) over the same findings: not a paired difference,
    and the reason says how each scored; another similarity is another way too."""
    from radlab.evaluation.context import EvalContext
    from radlab.evaluation.runner import compare_contexts

    patients = np.repeat(np.arange(20).astype(str), 2)
    a, b = (EvalContext(None, None, [], n_boot=50) for _ in range(2))  # type: ignore[arg-type]
    for ctx in (a, b):
        for task in ("zero_shot", "retrieval", "linear_probe"):
            ctx.task = task
            ctx.interval("macro_auc", lambda idx: float(len(idx)), patients, over=["cardiomegaly"])
    tasks_a = {"zero_shot": {"mode": "prompts", "prompt_mode": "names", "similarity": "global"},
               "retrieval": {"similarity": "both"}, "linear_probe": {}}
    tasks_b = {"zero_shot": {"mode": "prototypes", "prompt_mode": "prototypes", "similarity": None},
               "retrieval": {"similarity": "global"}, "linear_probe": {}}
    paired = compare_contexts(a, b, tasks_a, tasks_b)
    assert paired["zero_shot/macro_auc"]["unpaired"] == "A scored it via prompts, B via label head"
    assert "difference" not in paired["zero_shot/macro_auc"]
    assert paired["retrieval/macro_auc"]["unpaired"] == "A scored it with similarity both, B with similarity global"
    assert paired["linear_probe/macro_auc"]["difference"] == 0.0
