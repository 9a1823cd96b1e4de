"""Tasks on data that lacks something one task needs: the others still run, and no number is made up."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from radlab.data.records import RecordTable
from radlab.evaluation.runner import evaluate
from radlab.models.encoder import LabelHead, RadEncoder


def edited(table: RecordTable, **columns: object) -> RecordTable:
    frame = table.frame.copy()
    for name, value in columns.items():
        frame[name] = value
    return RecordTable(frame, table.root)


def test_zero_shot_skips_when_no_finding_has_both_classes_in_test(tiny_encoder: RadEncoder,
                                                                   split_table: RecordTable) -> None:
    frame = split_table.frame.copy()
    test = (frame["split"] == "test").to_numpy()
    for column in [c for c in frame.columns if c.startswith("label_")]:
        frame.loc[test, column] = np.nan
    table = RecordTable(frame, split_table.root)
    out = evaluate(tiny_encoder, table, ["zero_shot", "retrieval"], split_table.label_names, n_boot=10)["tasks"]
    assert out["zero_shot"]["skipped"] == "no finding has both classes among the test images"
    assert "skipped" not in out["retrieval"]


def test_top1_leaves_out_classes_derived_from_the_label_head(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                           cache_dir: Path) -> None:
    """lung_opacity scored as max(edema, consolidation) ties with one of them on every image: argmax would pick
    the earlier column every time, so derived classes take no part in top-1 decisions."""
    head = ["cardiomegaly", "consolidation", "edema"]
    image_only = copy.deepcopy(tiny_encoder)
    image_only.text_tower, image_only.text_proj = None, None
    image_only.label_head = LabelHead(head, image_only.embed_dim)
    out = evaluate(image_only, split_table, ["zero_shot"], split_table.label_names, n_boot=10,
                   cache_dir=cache_dir)["tasks"]["zero_shot"]
    proto = out["modes"]["prototypes"]
    assert "lung_opacity" in proto["unseen_defined_as"] and "lung_opacity" in proto["auc"]
    scored_head = [n for n in head if n in proto["auc"]]
    assert proto["single_label"]["chance"] == 1 / len(scored_head)
    assert set(out["exclusive"].get("classes", [])) <= set(head)


def test_segmentation_scores_only_structures_with_training_masks(tiny_encoder: RadEncoder,
                                                                  split_table: RecordTable, cache_dir: Path) -> None:
    heart = split_table.frame["mask_heart"].where(split_table.frame["split"] == "test", "")
    out = evaluate(tiny_encoder, edited(split_table, mask_heart=heart), ["segmentation"], [], n_boot=10,
                   options={"segmentation": {"steps": 20}}, cache_dir=cache_dir)["tasks"]["segmentation"]
    assert list(out["structures"]) == ["lungs"] and out["untrained"] == ["heart"]
    assert out["mean_dice"] == out["structures"]["lungs"]["dice"]


def test_kshot_fractions_run_when_no_finding_allows_the_largest_k(tiny_encoder: RadEncoder,
                                                                   split_table: RecordTable, cache_dir: Path) -> None:
    out = evaluate(tiny_encoder, split_table, ["kshot"], split_table.label_names, n_boot=10, cache_dir=cache_dir,
                   options={"kshot": {"shots": [10_000], "fractions": [1.0], "seeds": 1}})["tasks"]["kshot"]
    assert "10000" in out["kshot_skipped"] and out["kshot"] == {}
    assert out["fraction"]["1.0"]["mean"] > 0.5 and out["fraction_findings"]


def test_retrieval_keeps_apart_studies_of_different_patients_with_the_same_study_id(
        tiny_encoder: RadEncoder, split_table: RecordTable, cache_dir: Path) -> None:
    """Per-patient study numbering (study1, study2, ...) must not merge different patients' reports."""
    numbered = "study" + (split_table.frame.groupby("patient_id")["study_id"].rank(method="dense")
                          .astype(int).astype(str))
    renamed = edited(split_table, study_id=numbered)
    assert renamed.frame["study_id"].nunique() < split_table.frame["study_id"].nunique()
    runs = [evaluate(tiny_encoder, table, ["retrieval"], [], n_boot=10, cache_dir=cache_dir)["tasks"]["retrieval"]
            for table in (split_table, renamed)]
    for direction in ("image_to_text", "text_to_image"):
        before, after = (run["report"][direction] for run in runs)
        assert (after["n_queries"], after["n_keys"]) == (before["n_queries"], before["n_keys"])
        assert after["R@1"] == before["R@1"] and after["R@10"] == before["R@10"]


def test_a_task_option_that_is_not_a_number_is_named(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                     cache_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"option kshot.seeds='two': expected a whole number"):
        evaluate(tiny_encoder, split_table, ["kshot"], split_table.label_names, n_boot=10, cache_dir=cache_dir,
                 options={"kshot": {"seeds": "two"}})
    out = evaluate(tiny_encoder, split_table, ["kshot"], split_table.label_names, n_boot=10, cache_dir=cache_dir,
                   options={"kshot": {"seeds": "1e0", "shots": [1], "fractions": [1.0]}})["tasks"]["kshot"]
    assert out["seeds"] == [0]  # YAML reads 1e0 as a string: still the number 1


def test_zero_shot_by_prompts_is_not_paired_with_zero_shot_by_a_label_head(tiny_encoder: RadEncoder,
                                                                           split_table: RecordTable,
                                                                           cache_dir: Path) -> None:
    """``--compare`` of a text encoder with a label-supervised one over the same findings: their zero-shot
    figures are reported side by side, not as a paired difference."""
    head = ["cardiomegaly", "consolidation", "edema"]
    image_only = copy.deepcopy(tiny_encoder)
    image_only.text_tower, image_only.text_proj = None, None
    image_only.label_head = LabelHead(head, image_only.embed_dim)
    out = evaluate(tiny_encoder, split_table, ["zero_shot"], head, n_boot=10, cache_dir=cache_dir,
                   options={"zero_shot": {"modes": ["names"]}}, compare=image_only, compare_name="supervised")
    mine, theirs = out["tasks"]["zero_shot"], out["baseline"]["tasks"]["zero_shot"]
    assert mine["mode"] == "prompts" and theirs["mode"] == "prototypes" and set(mine["auc"]) == set(theirs["auc"])
    diff = out["paired_difference"]["zero_shot/macro_auc"]
    assert diff["unpaired"] == "A scored it via prompts, B via label head" and "p_value" not in diff
