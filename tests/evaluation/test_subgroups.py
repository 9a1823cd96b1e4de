"""Subgroup AUCs: hand-built scores whose quality differs by group, age bands, and the tasks on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radlab.data.records import RecordTable
from radlab.evaluation.context import EvalContext
from radlab.evaluation.features import FeatureCache
from radlab.evaluation.linear_probe import probe_scores, standardised
from radlab.evaluation.runner import evaluate
from radlab.evaluation.subgroups import TASKS_WITH_SUBGROUPS, age_bands, attribute_report, gap_level_note
from radlab.models.encoder import RadEncoder
from radlab.train.setup import training_labels


def scores_better_for_women(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two images each of 120 women (scores follow the labels) and 120 men (noise), and 4 patients of unknown
    sex; the second finding has no positive among the men."""
    rng = np.random.default_rng(seed)
    sexes = np.repeat(["F"] * 120 + ["M"] * 120 + [""] * 4, 2)
    patients = np.repeat([f"p{i}" for i in range(244)], 2)
    y = np.stack([rng.integers(0, 2, len(sexes)), np.where(sexes == "M", 0, rng.integers(0, 2, len(sexes)))], 1)
    y = y.astype(np.float64)
    noise = rng.normal(size=y.shape)
    s = np.where((sexes == "F")[:, None], y + 0.5 * noise, noise)
    return y, s, sexes, patients


def test_groups_are_scored_apart_on_the_findings_every_group_can_score() -> None:
    y, s, sexes, patients = scores_better_for_women()
    ctx = EvalContext(None, None, ["a", "b"], n_boot=200, task="linear_probe")
    report = attribute_report(ctx, y, s, ["a", "b"], patients, sexes, ["F", "M"], "sex", min_patients=10)
    assert report["findings"] == ["a"] and report["n_unknown"] == 8
    for sex in ("F", "M"):
        rows = sexes == sex
        assert report["groups"][sex]["n_patients"] == 120 and report["groups"][sex]["n_images"] == 240
        assert report["groups"][sex]["macro_auc"] == pytest.approx(roc_auc_score(y[rows, 0], s[rows, 0]))
    assert report["best"] == "F" and report["worst"] == "M"
    assert report["gap"] == pytest.approx(report["groups"]["F"]["macro_auc"] - report["groups"]["M"]["macro_auc"])
    assert report["gap_ci"]["ci_low"] > 0.2 and report["gap_ci"]["n_valid"] == 200
    assert {"linear_probe/subgroups/sex=F/macro_auc", "linear_probe/subgroups/sex/gap"} <= set(ctx.statistics)


def test_small_groups_get_counts_only_and_one_group_is_no_comparison() -> None:
    y, s, sexes, patients = scores_better_for_women()
    ctx = EvalContext(None, None, ["a", "b"], n_boot=20)
    report = attribute_report(ctx, y, s, ["a", "b"], patients, sexes, ["F", "M"], "sex", min_patients=121)
    assert "skipped" in report and report["groups"]["F"] == {"n_images": 240, "n_patients": 120}
    only_women = np.where(sexes == "M", "", sexes)
    report = attribute_report(ctx, y, s, ["a", "b"], patients, only_women, ["F"], "sex", min_patients=10)
    assert "fewer than two groups" in report["skipped"] and "gap" not in report


def test_age_bands_cut_at_whole_years() -> None:
    bands = age_bands(np.array([39.9, 40, 59.99, 60, 80, 95, np.nan]), (40, 60, 80))
    assert list(bands) == ["<40", "40-59", "40-59", "60-79", ">=80", ">=80", ""]
    with pytest.raises(ValueError, match="whole years"):
        age_bands(np.array([50.0]), (40.5,))


def test_probe_subgroups_on_phantoms_match_a_recomputation(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                           cache_dir: Path) -> None:
    labels = training_labels(split_table.split("train"), None)
    options = {task: {"subgroups": "sex,age,view", "age_edges": [50], "min_patients": 5}
               for task in TASKS_WITH_SUBGROUPS}
    options["finetune"] |= {"steps": 3, "batch_size": 16}
    out = evaluate(tiny_encoder, split_table, list(TASKS_WITH_SUBGROUPS), labels, n_boot=50, options=options,
                   cache_dir=cache_dir, compare=tiny_encoder, compare_name="same")
    for task in TASKS_WITH_SUBGROUPS:
        assert set(out["tasks"][task]["subgroups"]) == {"sex", "age", "view"}, task
    probe = out["tasks"]["linear_probe"]["subgroups"]
    assert set(probe) == {"sex", "age", "view"} and list(probe["age"]["groups"]) == ["<50", ">=50"]
    assert sum(g["n_images"] for g in probe["sex"]["groups"].values()) + probe["sex"]["n_unknown"] == \
        out["n_records"]["test"]
    ctx = EvalContext(tiny_encoder, split_table, labels, features=FeatureCache(cache_dir))
    x, y = standardised(ctx)
    scores, _ = probe_scores(ctx, x, y)
    women = (split_table.frame["sex"].to_numpy()[ctx.rows("test")] == "F")
    expected = np.mean([roc_auc_score(y["test"][women & np.isin(y["test"][:, k], (0, 1)), k],
                                      scores[women & np.isin(y["test"][:, k], (0, 1)), k])
                        for k in (labels.index(n) for n in probe["sex"]["findings"])])
    assert probe["sex"]["groups"]["F"]["macro_auc"] == pytest.approx(expected)
    same = out["paired_difference"]["linear_probe/subgroups/sex=F/macro_auc"]
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0


def test_the_gap_of_many_groups_is_adjusted_for_the_pairs_it_was_chosen_from() -> None:
    """Four age bands of equal performance: best minus worst is the largest of 6 noisy differences, so a plain
    95% interval of that pair excludes 0 in about a quarter of such data sets; the Bonferroni-adjusted one (level
    1 - 0.05/6) rarely does. Two groups keep the 95% interval."""
    rng = np.random.default_rng(0)
    excluded = []
    for _ in range(16):
        y = (rng.random((240, 2)) < 0.3).astype(float)
        s = y * 0.8 + rng.normal(size=y.shape)
        bands = np.repeat(["<40", "40-59", "60-79", ">=80"], 60)
        ctx = EvalContext(None, None, ["a", "b"], n_boot=100, seed=int(rng.integers(1 << 30)))
        report = attribute_report(ctx, y, s, ["a", "b"], np.arange(240).astype(str), bands,
                                  ["<40", "40-59", "60-79", ">=80"], "age", min_patients=10)
        assert report["gap_pairs"] == 6 and report["gap_ci"]["level"] == pytest.approx(1 - 0.05 / 6)
        excluded.append(report["gap_ci"]["ci_low"] > 0)
    assert sum(excluded) <= 1, f"the adjusted interval excluded 0 in {sum(excluded)} of 16 null data sets"
    assert "(99.2% interval: Bonferroni over 6 pairs)" in gap_level_note(report)
    y, s, sexes, patients = scores_better_for_women()
    two = attribute_report(EvalContext(None, None, ["a", "b"], n_boot=50), y, s, ["a", "b"], patients, sexes,
                           ["F", "M"], "sex", min_patients=10)
    assert two["gap_ci"]["level"] == 0.95 and gap_level_note(two) == ""
