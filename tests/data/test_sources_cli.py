"""`radlab data import`: the same code path for fixtures and for the bundled real data."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data.bundled import load_bundled
from radlab.data.records import RecordTable


def _import(*args: str) -> str:
    result = CliRunner().invoke(app, ["data", "import", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_import_writes_records_and_derived_masks(tmp_path):
    out = tmp_path / "out"
    output = _import("siim", str(fx.build_siim(tmp_path / "siim")), "--out", str(out))
    assert "2 records" in output and "splits none: 2" in output  # the unlabelled test image is skipped
    stored = pd.read_parquet(out / "records.parquet")
    assert sorted(p for p in stored["mask_pneumothorax"] if p)[0].startswith("masks/")  # relative to OUT
    table = RecordTable.read(out)
    assert table.mask_path(0, "pneumothorax").exists() and table.image_path(0).exists()


def test_import_options_prompts_and_errors(tmp_path):
    root = fx.build_mimic(tmp_path / "mimic")
    _import("mimic_cxr", str(root), "--out", str(tmp_path / "negbio"), "--option", "labeler=negbio")
    frame = RecordTable.read(tmp_path / "negbio").frame.set_index("id")
    assert frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "label_cardiomegaly"] == 1
    _import("nih", str(fx.build_nih(tmp_path / "nih")), "--out", str(tmp_path / "nih_out"), "--prompts")
    reports = RecordTable.read(tmp_path / "nih_out").frame.set_index("id")["report"]
    assert reports["nih_00000002_000"].startswith("FINDINGS: ") and "cardiomegaly" in reports["nih_00000001_000"]
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    result = CliRunner().invoke(app, ["data", "import", "mimic_cxr", str(root), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "mimic-cxr-2.0.0-split.csv.gz" in result.output


def test_report_labels_fill_what_the_source_leaves_open(tmp_path):
    _import("montgomery", str(fx.build_montgomery(tmp_path / "mc")), "--out", str(tmp_path / "o"), "--report-labels")
    frame = RecordTable.read(tmp_path / "o").frame.set_index("id")
    assert frame.loc["montgomery_MCUCXR_0104_1", "label_lung_cavity"] == 1  # "cavitary" in the reading
    assert frame.loc["montgomery_MCUCXR_0104_1", "label_tuberculosis"] == 1


def test_bundled_iu_xray_imports_through_the_same_command(data_root, tmp_path):
    folder = data_root / "iu_xray_reports"
    if not folder.is_dir():
        pytest.skip("iu_xray_reports is not in the bundled data folder")
    _import("iu_xray", str(folder), "--out", str(tmp_path / "iu"))
    imported, bundled = RecordTable.read(tmp_path / "iu"), load_bundled(data_root)["iu_xray_reports"]
    assert imported.frame["patient_id"].nunique() == 3851
    pd.testing.assert_frame_equal(imported.frame.drop(columns="image_path"), bundled.frame.drop(columns="image_path"))


@pytest.mark.parametrize("bad", ["phantom", "phantom:", ":runs/demo/phantoms"])
def test_source_specs_are_checked_before_loading(bad, tmp_path):
    agreement = CliRunner().invoke(app, ["data", "label-agreement", bad, "--out", str(tmp_path / "a.md")])
    evaluation = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "ckpt"), "--task", "linear_probe",
                                          "--data", bad, "--out", str(tmp_path / "m.json")])
    for result in (agreement, evaluation):
        assert result.exit_code == 2 and "expected SOURCE:PATH" in result.output
    assert not (tmp_path / "a.md").exists()


def test_a_manifests_findings_and_impression_are_report_text_counted_and_labelled(tmp_path):
    (tmp_path / "manifest.csv").write_text("image_path,patient_id,findings,impression\n,p1,Clear lungs.,\n"
                                           ",p2,,Cardiomegaly.\n,p3,,\n")
    output = _import("manifest", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "out"), "--report-labels")
    assert "3 records, 3 patients, 2 with report text" in output
    assert RecordTable.read(tmp_path / "out").frame["label_cardiomegaly"].iat[1] == 1
