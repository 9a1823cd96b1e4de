"""Phantoms -> pre-train -> evaluate on held-out patients: learning happened; the demo runs end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from radlab.cli import app
from run_logs import logged

runner = CliRunner()


# The shipped configs at a test's scale: 64 px images and, for CLIP, a 2-layer 128-wide text tower (the
# config's 4x256 one took half of CLIP's training time on the phantoms' short reports).
SMALLER = {"supervised": [], "clip": ["model.text_tower.kwargs={pooling: cls, layers: 2, hidden_size: 128, heads: 2}"]}


def _pretrain(method: str, phantom_dir, out) -> None:
    result = runner.invoke(app, [
        "pretrain", "--config", f"configs/{method}.yaml", f"out={out}", "optim.steps=100", "optim.batch_size=32",
        "optim.warmup_steps=10", "optim.log_every=1", "model.image_size=64", f"data.sources=[{{source: phantom, path: {phantom_dir}}}]",
        *SMALLER[method],
    ])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("method", ["supervised", "clip"])
def test_pretrain_then_probe_beats_chance_on_held_out_patients(method, phantom_dir, tmp_path):
    _pretrain(method, phantom_dir, tmp_path / method)
    metrics_log = logged(tmp_path / method)
    losses = [m["loss"] for m in metrics_log]
    assert sum(losses[-10:]) < sum(losses[:10])
    out = tmp_path / f"{method}.json"
    result = runner.invoke(app, [
        "eval", "--checkpoint", str(tmp_path / method / "checkpoint"), "--task", "linear_probe",
        "--task", "zero_shot", "--data", f"phantom:{phantom_dir}",
        "--labels", "cardiomegaly,pleural_effusion,pneumothorax,support_devices", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["n_records"]["test"] > 40
    overlap = metrics["pretraining_overlap"]["encoder"]
    assert overlap["checked"] and not overlap["unchecked"] and overlap["shared_patients"] == 0, overlap
    assert metrics["tasks"]["linear_probe"]["macro_auc"] > 0.75
    zero_shot = metrics["tasks"]["zero_shot"]
    assert zero_shot["mode"] == ("prototypes" if method == "supervised" else "prompts")
    assert all(0.0 <= auc <= 1.0 for auc in zero_shot["auc"].values())
    if method == "supervised":
        assert zero_shot["macro_auc"] > 0.6


def test_list_prints_every_registry():
    for kind in ("sources", "encoders", "objectives", "tasks"):
        result = runner.invoke(app, ["list", kind])
        assert result.exit_code == 0, result.output
    assert "clip" in runner.invoke(app, ["list", "objectives"]).output
    assert "linear_probe" in runner.invoke(app, ["list", "tasks"]).output


def test_eval_rejects_ambiguous_encoder():
    result = runner.invoke(app, ["eval", "--task", "linear_probe", "--data", "phantom:x"])
    assert result.exit_code != 0


def test_demo_compares_every_kind_of_supervision(tmp_path):
    from radlab.demo import DEMO_METHODS, run_demo

    rows = run_demo(tmp_path, n=80, steps=2)
    by_name = {row["encoder"]: row for row in rows}
    assert list(by_name) == ["random init", *DEMO_METHODS]
    assert {row["supervision"] for row in rows} == {"none", "images only", "labels", "report text"}
    assert by_name["dinov2"]["zero-shot AUC"] == "-" and by_name["random init"]["zero-shot AUC"] == "-"
    assert by_name["clip"]["zero-shot via"] == "prompts" and by_name["supervised"]["zero-shot via"] == "label head"
    def estimate(cell: str) -> float:  # "0.760 [0.731, 0.789]": the estimate inside its interval
        value, low, high = (float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split())
        assert low <= value <= high, cell
        return value

    for row in rows:
        assert 0.0 <= estimate(row["linear probe AUC"]) <= 1.0 and 0.0 <= estimate(row["sex AUC"]) <= 1.0
        assert estimate(row["age MAE"]) > 0
    recorded = json.loads((tmp_path / "clip" / "metrics.json").read_text())["pretraining_overlap"]["encoder"]
    assert recorded["checked"] and recorded["shared_patients"] == 0
    report = (tmp_path / "report.md").read_text().splitlines()
    assert report[2].startswith("| encoder | supervision |") and len(report) == 4 + len(rows)
