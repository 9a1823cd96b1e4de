import numpy as np
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
