"""The results store: rows say which data, label set and seed they come from, and a table mixing them warns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radlab.evaluation.context import nonzero
from radlab.evaluation.leakage import PretrainingOverlap
from radlab.evaluation.metrics import roc_auc
from radlab.evaluation.report import _bar_label, append_run, read_runs, render
from radlab.evaluation.runner import headline, subgroup_lines


def _run(labels: list[str], seed: int, auc: float, encoder: str = "enc") -> dict:
    return {"encoder": encoder, "encoder_hash": f"{encoder}-weights", "seed": seed, "data_hash": "abc",
            "code_version": "1", "labels": labels, "config": {"tasks": ["linear_probe"], "options": {}},
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
    assert "| retrieval/R@1 | -0.010 | [-0.020, -0.004] (400 of 500 resamples) | < 0.005 |" in text, \
        "two-sided: 2 / 400 defined resamples, and the interval says it rests on 400"
    assert "| kshot/macro_auc | - | - | - |" in text, "undefined on the full data: shown, not a crash"
    assert "| zero_shot/macro_auc | - | not paired: A and B average different findings | - |" in text
    with Image.open(tmp_path / "store.png") as image:
        assert image.width == round(2.8 * 4 * 120), "panels: linear probe, sex AUC, age MAE, retrieval"
    assert "| enc | demographics | sex auc | 0.900 | [0.850, 0.940] |" in text
    run["tasks"]["linear_probe"]["macro_auc_ci"].update(n_boot=1000, n_valid=812)
    append_run(run, store)
    assert "[0.700, 0.800] (812 of 1000 resamples) |" in render(store).read_text()
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



def test_a_rerun_replaces_its_earlier_run_in_place(tmp_path: Path) -> None:
    """Same weights, data, labels, seed, tasks and options: the re-run replaces the stored run where it stood; a
    stored run that does not record what identifies it (an older store) is never replaced."""
    store = tmp_path / "store.jsonl"
    append_run(_run(["edema"], 0, 0.70, "runs/a/checkpoint"), store)
    append_run(_run(["edema"], 0, 0.60, "runs/b/checkpoint"), store)
    other_options = _run(["edema"], 0, 0.75, "runs/a/checkpoint")
    other_options["config"]["options"] = {"linear_probe": {"c": 1}}
    append_run(other_options, store)
    rerun = _run(["edema"], 0, 0.71, "runs/a/checkpoint")
    append_run(rerun, store)
    assert [(r["encoder"], r["tasks"]["linear_probe"]["macro_auc"]) for r in read_runs(store)] == [
        ("runs/a/checkpoint", 0.71), ("runs/b/checkpoint", 0.60), ("runs/a/checkpoint", 0.75)]
    older = {k: v for k, v in rerun.items() if k != "config"}
    append_run(older, store)
    append_run(older, store)
    assert len(read_runs(store)) == 5
    append_run(_run(["edema"], 0, 0.61, "runs/b/checkpoint"), store)
    rows = [line for line in render(store).read_text().splitlines() if line.startswith("| runs/b/checkpoint |")]
    assert len(rows) == 1 and "| 0.610 |" in rows[0]


def test_bar_labels_of_checkpoint_folders_name_their_runs() -> None:
    """``.../RUN/checkpoint`` is labelled by RUN; two runs of the same name by the start of their hashes."""
    rows = [{"encoder": f"runs/{name}/checkpoint", "encoder_hash": digest, "seed": 0}
            for name, digest in (("lr1e-4-long-schedule", "aaaaaa11"), ("lr3e-4-long-schedule", "bbbbbb22"))]
    rows += [{"encoder": f"{group}/x/checkpoint/", "encoder_hash": digest, "seed": 0}
             for group, digest in (("one", "cccccc33"), ("two", "dddddd44"))]
    assert [_bar_label(r, rows) for r in rows] == ["1e-4-long-schedule", "3e-4-long-schedule", "x [cccccc]",
                                                   "x [dddddd]"]


def test_rows_say_whether_leakage_was_checked_and_forced_overlap_warns(tmp_path: Path) -> None:
    """An encoder reported past the leakage refusal (``--allow-overlap``) is marked with what it overlapped and
    the table warns; a clean check, an unchecked encoder and a store from before the check say so."""
    forced = PretrainingOverlap(50, checked=["phantom:/d"], shared_patients=3, exact_duplicates=2).as_dict()
    clean = PretrainingOverlap(50, checked=["phantom:/d"]).as_dict()
    public = PretrainingOverlap(50, unchecked=["rad-dino: pre-training data not known"]).as_dict()
    partly = PretrainingOverlap(50, checked=["phantom:/d"], unchecked=["its starting tower"]).as_dict()
    run = {**_run(["edema"], 0, 0.8, "leaky"), "pretraining_overlap": {"encoder": forced, "compare": clean},
           "baseline": {"encoder": "base", "encoder_hash": "b", "tasks": {"linear_probe": {"macro_auc": 0.7}}}}
    store = tmp_path / "store.jsonl"
    append_run({**_run(["edema"], 0, 0.7, "public"), "pretraining_overlap": {"encoder": public}}, store)
    append_run({**_run(["edema"], 0, 0.7, "partly"), "pretraining_overlap": {"encoder": partly}}, store)
    append_run(_run(["edema"], 0, 0.7, "older"), store)
    text = render(store).read_text()
    assert "| public | linear_probe | macro_auc | 0.700 |" in text and text.count("| not checked |") == 2
    assert "| clean (1 part(s) not checked) |" in text and "Warning" not in text
    append_run(run, store)
    text = render(store).read_text()
    assert "| leaky | linear_probe |" in text and "| overlap: 3 test patients, 2 test images |" in text
    assert "| base | linear_probe | macro_auc | 0.700 |" in text and text.count("| clean |") == 1
    assert "Warning: rows marked `overlap` come from an encoder pre-trained on test patients" in text


def test_a_rendered_file_as_store_is_refused_and_bad_lines_are_named(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radlab.cli import app

    for name in ("results.md", "results.PNG"):
        with pytest.raises(ValueError, match=f"{name}: a store is a JSONL file"):
            append_run(_run(["edema"], 0, 0.7), tmp_path / name)
        assert not (tmp_path / name).exists()
    result = CliRunner().invoke(app, ["eval", "--task", "linear_probe", "--data", "phantom:/nowhere",
                                      "--checkpoint", "/nowhere", "--store", str(tmp_path / "results.md")])
    assert result.exit_code == 1 and "a store is a JSONL file" in result.output, result.output
    store = append_run(_run(["edema"], 0, 0.7), tmp_path / "results.jsonl")
    store.write_text(store.read_text() + "\n# radlab evaluation results\n")
    with pytest.raises(ValueError, match=r"results.jsonl, line 3: not a JSON run"):
        append_run(_run(["edema"], 1, 0.7), store)
    with pytest.raises(ValueError, match=r"results.jsonl, line 3"):
        render(store)


ZERO_SHOT_PROMPTS = {"mode": "prompts", "prompt_mode": "names", "similarity": "global", "macro_auc": 0.45,
                     "macro_auc_ci": {"ci_low": 0.35, "ci_high": 0.56}}
ZERO_SHOT_HEAD = {"mode": "prototypes", "prompt_mode": "prototypes", "similarity": None, "macro_auc": 0.92,
                  "macro_auc_ci": {"ci_low": 0.87, "ci_high": 0.97}}
KSHOT = {"seeds": [0, 1, 2], "kshot_findings": ["cardiomegaly", "edema"], "kshot": {"2": {"mean": 0.55},
         "16": {"mean": 0.61}}, "fraction": {}, "macro_auc": 0.61}


def test_console_lines_say_how_zero_shot_scored_and_which_k_the_kshot_headline_is() -> None:
    assert headline(ZERO_SHOT_PROMPTS) == "macro_auc 0.450 [0.350, 0.560] via prompts"
    assert headline(ZERO_SHOT_HEAD) == "macro_auc 0.920 [0.870, 0.970] via label head"
    assert headline(KSHOT) == "macro_auc 0.610 at K=16 over 2 findings (mean of 3 seeds)"
    no_curve = {**KSHOT, "kshot": {}, "kshot_skipped": "no finding has 16 positive and 16 negative training "
                "patients", "macro_auc": float("nan")}
    assert "no K-shot curve: no finding has 16 positive" in headline(no_curve)


def test_the_kshot_headline_shows_its_patient_interval_and_the_sd_across_seeds(tmp_path: Path) -> None:
    interval = {"estimate": 0.61, "ci_low": 0.55, "ci_high": 0.67}
    kshot = {**KSHOT, "kshot": {**KSHOT["kshot"], "16": {"mean": 0.61, "std": 0.02, "macro_auc_ci": interval}},
             "macro_auc_ci": interval}
    line = "macro_auc 0.610 [0.550, 0.670] at K=16 over 2 findings (mean of 3 seeds, SD 0.020)"
    assert headline(kshot) == line
    run = _run(["cardiomegaly"], 0, 0.75, "clip")
    run["tasks"]["kshot"] = kshot
    text = render(append_run(run, tmp_path / "store.jsonl")).read_text()
    assert "| clip | kshot | macro_auc at K=16 over 2 findings (mean of 3 seeds, SD 0.020) | 0.610 | [0.550, 0.670] |" \
        in text


def test_the_store_says_how_zero_shot_scored_and_why_pairs_obtained_differently_are_not_paired(
        tmp_path: Path) -> None:
    """A run stored before zero-shot modes were compared (paired via prompts against via a label head) shows
    that pair as not paired, with the reason, and no difference; every row says how zero-shot scored, and
    K-shot's K."""
    run = _run(["cardiomegaly"], 0, 0.75, "clip")
    run["tasks"].update({"zero_shot": ZERO_SHOT_PROMPTS, "kshot": KSHOT})
    run["baseline"] = {"encoder": "sup", "encoder_hash": "sup-weights",
                       "tasks": {"zero_shot": ZERO_SHOT_HEAD, "linear_probe": {"macro_auc": 0.7}}}
    run["paired_difference"] = {
        "zero_shot/macro_auc": {"difference": -0.47, "ci_low": -0.6, "ci_high": -0.4, "p_value": 0.0, "n_valid": 100},
        "linear_probe/macro_auc": {"difference": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_value": 0.002}}
    text = render(append_run(run, tmp_path / "store.jsonl")).read_text()
    assert "| clip | zero_shot | macro_auc via prompts | 0.450 |" in text
    assert "| sup | zero_shot | macro_auc via label head | 0.920 |" in text
    assert "| clip | kshot | macro_auc at K=16 over 2 findings (mean of 3 seeds) | 0.610 |" in text
    assert "| linear_probe/macro_auc | +0.050 |" in text and "-0.470" not in text
    assert "| zero_shot/macro_auc | - | not paired: A scored it via prompts, B via label head | - |" in text
