"""The seed summary of the method benchmarks: headline numbers read from evaluation results, spread over runs."""

import math

import pytest

from radlab.bench.methods import across_seeds, drawn_phantoms, interval_cell, task_metric
from radlab.data.records import RecordTable


def _results(zero_shot: float | None, probe: float, i2t: float, t2i: float) -> dict:
    tasks = {"linear_probe": {"macro_auc": probe},
             "retrieval": {"report": {"image_to_text": {"R@10": i2t}, "text_to_image": {"R@10": t2i}}}}
    tasks["zero_shot"] = {"skipped": "no text tower"} if zero_shot is None else {"macro_auc": zero_shot}
    return {"tasks": tasks}


def test_task_metric_reads_nested_numbers_and_nan_where_missing() -> None:
    results = _results(None, 0.8, 0.1, 0.2)
    assert task_metric(results, ("retrieval", "report", "text_to_image", "R@10")) == 0.2
    assert math.isnan(task_metric(results, ("zero_shot", "macro_auc")))
    assert math.isnan(task_metric(results, ("vqa", "accuracy")))


def test_across_seeds_gives_mean_and_sample_sd_and_drops_skipped_runs() -> None:
    spread = across_seeds([_results(0.6, 0.70, 0.05, 0.10), _results(0.7, 0.80, 0.07, 0.10),
                           _results(None, 0.75, 0.09, 0.10)])
    assert spread["linear probe AUC"]["mean"] == pytest.approx(0.75)
    assert spread["linear probe AUC"]["std"] == pytest.approx(0.05)  # ddof 1 over 0.70, 0.80, 0.75
    assert spread["image->report R@10"]["std"] == pytest.approx(0.02)
    assert spread["report->image R@10"] == {"mean": pytest.approx(0.10), "std": pytest.approx(0.0), "n": 3}
    assert spread["zero-shot AUC"]["n"] == 2 and spread["zero-shot AUC"]["mean"] == pytest.approx(0.65)


def test_interval_cell_reads_the_interval_beside_the_estimate() -> None:
    results = _results(None, 0.8, 0.1, 0.2)
    results["tasks"]["linear_probe"]["macro_auc_ci"] = {"estimate": 0.8, "ci_low": 0.75, "ci_high": 0.851}
    assert interval_cell(results, ("linear_probe", "macro_auc")) == "0.800 [0.750, 0.851]"
    assert interval_cell(results, ("zero_shot", "macro_auc")) == "-"
    assert interval_cell(results, ("retrieval", "report", "image_to_text", "R@10")) == "-"  # estimate, no interval


def test_phantoms_drawn_for_another_count_or_size_are_drawn_again(tmp_path) -> None:
    from PIL import Image

    folder = drawn_phantoms(tmp_path / "phantoms", 10, 32)
    stamp = (folder / "records.parquet").stat().st_mtime_ns
    assert drawn_phantoms(folder, 10, 32) == folder and (folder / "records.parquet").stat().st_mtime_ns == stamp
    table = RecordTable.read(drawn_phantoms(folder, 12, 48))
    with Image.open(table.image_path(0)) as image:
        assert len(table) == 12 and image.size == (48, 48)
