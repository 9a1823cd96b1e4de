"""docs/own_data.md on phantoms: a site's manifest -> import -> check (one unreadable image dropped) -> pre-train
from the written table -> evaluate with subgroups, leakage checked through the `table` source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from radlab.cli import app
from radlab.data.records import RecordTable

runner = CliRunner()


def site_manifest(phantom_dir: Path, site: Path) -> Path:
    """The phantoms as a site would describe them: a manifest.csv beside an images/ folder (relative paths,
    sex, age, view, report and the annotated labels), with one image file that is not an image."""
    table = RecordTable.read(phantom_dir)
    (site / "images").mkdir(parents=True)
    frame = table.frame.copy()
    for i in range(len(frame)):
        name = f"{frame['id'].iat[i]}.png"
        shutil.copy(table.image_path(i), site / "images" / name)
        frame.loc[frame.index[i], "image_path"] = f"images/{name}"
    (site / "images" / f"{frame['id'].iat[5]}.png").write_text("scanner export failed")
    labels = [c for c in frame if c.startswith("label_") and frame[c].notna().any()]
    columns = ["image_path", "patient_id", "study_id", "view", "sex", "age", "report", *labels]
    frame[columns].to_csv(site / "manifest.csv", index=False)
    return site / "manifest.csv"


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_sites_manifest_goes_from_import_to_an_evaluated_encoder(phantom_dir: Path, tmp_path: Path) -> None:
    manifest = site_manifest(phantom_dir, tmp_path / "site")
    runs = tmp_path / "runs"
    _run("data", "import", "manifest", str(manifest), "--out", str(runs / "site"))
    checked = _run("data", "check", str(runs / "site"), "--drop", str(runs / "site_ok"))
    assert "1 of 400 images cannot be read" in checked and "data row 6 " in checked, "the manifest's 6th data row"
    _run("pretrain", "--config", "configs/supervised.yaml", f"data.sources=[{{source: table, path: {runs / 'site_ok'}}}]",
         f"out={runs / 'site_sup'}", "optim.steps=20", "optim.batch_size=16", "optim.warmup_steps=2",
         "model.image_size=32", "model.image_tower.kwargs={depth: 1}")
    _run("eval", "--checkpoint", str(runs / "site_sup" / "checkpoint"), "--data", f"table:{runs / 'site_ok'}",
         "--task", "linear_probe", "--task", "demographics", "--subgroups", "sex,age", "--bootstrap", "50",
         "-o", "linear_probe.min_patients=5", "--out", str(runs / "m.json"), "--store", str(runs / "results.jsonl"))
    metrics = json.loads((runs / "m.json").read_text())
    overlap = metrics["pretraining_overlap"]["encoder"]
    assert overlap["checked"] and overlap["shared_patients"] == 0, overlap
    assert sum(metrics["n_records"].values()) == 399
    assert set(metrics["tasks"]["linear_probe"]["subgroups"]) == {"sex", "age"}
    assert metrics["tasks"]["demographics"]["sex"]["auc"] > 0.5
    assert "## Subgroups" in (runs / "results.md").read_text()
