"""K-shot and data fractions: beside the SD over seeds, each setting has a patient-bootstrap interval of its mean
over seeds, which ``--compare`` pairs (the draws depend on labels and seed only, so both encoders share them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radlab.data.records import RecordTable
from radlab.evaluation.kshot import seed_mean_auc
from radlab.evaluation.metrics import macro_auc
from radlab.evaluation.runner import evaluate, headline
from radlab.evaluation.stats import patient_samples
from radlab.models.encoder import RadEncoder


def test_the_interval_statistic_is_the_mean_over_seeds_of_the_strict_macro_auc() -> None:
    """On every patient resample (repeated rows, unannotated and uncertain labels, tied and constant scores)."""
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 3)) < 0.25).astype(float)
    labels[rng.random((120, 3)) < 0.2] = np.nan
    labels[rng.random((120, 3)) < 0.05] = -1.0
    labels[:, 2] = np.where(np.isin(np.arange(120), (0, 3, 6)), 1.0, labels[:, 2].clip(-1, 0))  # 3 positives
    runs = [np.round(rng.normal(size=(120, 3)) + np.nan_to_num(labels), 1) for _ in range(3)]
    runs[1][:, 2] = 0.0  # a finding that seed could not fit: chance
    statistic = seed_mean_auc(labels, runs)
    samples = [np.arange(120), *patient_samples(np.repeat(np.arange(40).astype(str), 3), 200, 0)]
    expected = [np.mean([macro_auc(labels[idx], s[idx], strict=True) for s in runs]) for idx in samples]
    got = [statistic(idx) for idx in samples]
    assert np.isnan(expected).any() and not np.isnan(expected).all()  # some resamples lack a class: NaN
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


def test_each_setting_has_a_patient_interval_that_compare_pairs(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                                cache_dir: Path) -> None:
    out = evaluate(tiny_encoder, split_table, ["kshot"], ["cardiomegaly", "pleural_effusion"], n_boot=30,
                   cache_dir=cache_dir, options={"kshot": {"shots": [2], "fractions": [1.0], "seeds": 2}},
                   compare=tiny_encoder)
    result = out["tasks"]["kshot"]
    shots, full = result["kshot"]["2"], result["fraction"]["1.0"]
    for setting in (shots, full):
        ci = setting["macro_auc_ci"]
        assert ci["estimate"] == pytest.approx(setting["mean"]) and ci["n_valid"] > 0 and ci["unit"] == "patient"
        assert ci["ci_low"] <= ci["estimate"] <= ci["ci_high"]
    assert full["std"] == 0 and full["macro_auc_ci"]["ci_high"] > full["macro_auc_ci"]["ci_low"]  # seeds agree
    assert result["macro_auc_ci"] == shots["macro_auc_ci"] and result["macro_auc"] == shots["mean"]
    assert headline(result).startswith(f"macro_auc {shots['mean']:.3f} [{shots['macro_auc_ci']['ci_low']:.3f}, ")
    for key in ("K=2", "fraction=1.0"):  # the same encoder twice: paired, and no difference on any resample
        paired = out["paired_difference"][f"kshot/{key}/macro_auc"]
        assert paired["difference"] == paired["ci_low"] == paired["ci_high"] == 0 and paired["n_valid"] > 0
