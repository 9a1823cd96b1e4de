import json

import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.records import RecordError
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.manifest import ManifestSource


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_reads_record_columns_and_keeps_extras(tmp_path, fmt):
    table = ManifestSource().load(fx.build_manifest(tmp_path, fmt))
    frame = table.frame
    assert frame["id"].tolist() == ["img/a.png", "img/b.png"] and (frame["source"] == "manifest").all()
    values = table.labels(["cardiomegaly", "pneumothorax", "edema"])
    np.testing.assert_array_equal(values[:, :2], [[1, np.nan], [0, -1]])
    assert np.isnan(values[:, 2]).all() and frame["site"].tolist() == ["north", "south"]
    assert table.image_path(1) == tmp_path / "img/b.png"


def test_manifest_errors_name_the_row(tmp_path):
    root = fx.build_manifest(tmp_path)
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace(",LAT,", ",lateral,"))
    with pytest.raises(RecordError, match=r"data row 2: view='lateral'"):
        ManifestSource().load(root)
    (root / "age.jsonl").write_text('{"image_path": "img/a.png", "patient_id": "p1", "age": 61}\n'
                                    '{"image_path": "img/b.png", "patient_id": "p2", "age": "old"}\n')
    with pytest.raises(RecordError, match=r"age.jsonl: data row 2: age='old' is not a number"):
        ManifestSource().load(root / "age.jsonl")
    (root / "bad.jsonl").write_text('{"image_path": "img/a.png", "patient_id": "p1"}\n{"image_path": \n')
    with pytest.raises(SourceFormatError, match=r"bad.jsonl: line 2: not valid JSON"):
        ManifestSource().load(root / "bad.jsonl")


def test_text_only_records_get_row_ids(tmp_path):
    (tmp_path / "manifest.csv").write_text("image_path,patient_id,report\n,p1,No effusion.\n,p2,Cardiomegaly.\n")
    frame = ManifestSource().load(tmp_path).frame
    assert frame["id"].tolist() == ["row1", "row2"] and frame["image_path"].tolist() == ["", ""]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_findings_and_impression_make_the_report_a_row_lacks(tmp_path, fmt):
    """As the provider sources write it: "FINDINGS: ... IMPRESSION: ...", either part alone; a row's own report
    is kept, and a row without any text stays without."""
    rows = [{"image_path": "", "patient_id": "p1", "findings": "Heart enlarged.", "impression": "Cardiomegaly."},
            {"image_path": "", "patient_id": "p2", "findings": "", "impression": "No acute disease."},
            {"image_path": "", "patient_id": "p3", "findings": "Clear lungs.", "impression": "", "report": "Own."},
            {"image_path": "", "patient_id": "p4", "findings": "", "impression": ""}]
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    else:
        (tmp_path / "manifest.jsonl").write_text("\n".join(
            json.dumps({k: v or None for k, v in row.items()}) for row in rows) + "\n")
    table = ManifestSource().load(tmp_path)
    assert table.texts() == ["FINDINGS: Heart enlarged. IMPRESSION: Cardiomegaly.", "IMPRESSION: No acute disease.",
                             "Own.", ""]
    assert table.frame["findings"].tolist() == ["Heart enlarged.", "", "Clear lungs.", ""]


def test_a_patient_in_two_splits_is_refused_naming_rows_not_the_patient(tmp_path):
    (tmp_path / "manifest.csv").write_text("image_path,patient_id,split\n,SECRET7,train\n,p2,test\n,SECRET7,\n"
                                           ",SECRET7,test\n,p3,val\n,p3,val\n")
    with pytest.raises(SourceFormatError, match=r"manifest.csv: data rows 1 \(train\) and 4 \(test\) are one "
                                                r"patient's records in different splits.*leave it empty") as caught:
        ManifestSource().load(tmp_path)
    assert "SECRET" not in str(caught.value)
    (tmp_path / "manifest.csv").write_text("image_path,patient_id,split\n,SECRET7,train\n,p2,test\n,SECRET7,\n")
    assert ManifestSource().load(tmp_path).frame["split"].tolist() == ["train", "test", ""]
