import re

import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.loading import load_tables
from radlab.data.records import RecordError, RecordTable
from radlab.data.splits import DEFAULT_FRACTIONS, assign_splits, check_patient_disjoint


def _records(n: int = 6) -> list[dict]:
    return [
        {"id": f"r{i}", "image_path": f"img/{i}.png", "source": "s", "patient_id": f"p{i // 2}",
         "view": "PA", "sex": "F" if i % 2 else "M", "age": 40.0 + i, "report": f"text {i}",
         "label_cardiomegaly": [1.0, 0.0, -1.0, np.nan, 1.0, 0.0][i], "mask_lungs": f"m/{i}.png"}
        for i in range(n)
    ]


def test_round_trip_keeps_values_and_resolves_paths(tmp_path):
    table = RecordTable.from_records(_records(), root=tmp_path / "data")
    written = table.write(tmp_path / "out")
    back = RecordTable.read(written)
    assert back.frame["id"].tolist() == table.frame["id"].tolist()
    np.testing.assert_array_equal(back.labels(["cardiomegaly"]), table.labels(["cardiomegaly"]))
    assert back.image_path(3) == (tmp_path / "data" / "img" / "3.png").resolve()
    assert back.mask_path(3, "lungs") == (tmp_path / "data" / "m" / "3.png").resolve()
    assert back.frame["age"].tolist() == table.frame["age"].tolist()


def test_missing_label_stays_nan_not_negative(tmp_path):
    table = RecordTable.from_records(_records(), root=tmp_path)
    values = table.labels(["cardiomegaly", "pneumothorax"])
    assert np.isnan(values[3, 0]) and np.isnan(values[:, 1]).all()


@pytest.mark.parametrize("field,value,message", [
    ("label_cardiomegaly", 2.0, "data row 2: label_cardiomegaly"),
    ("view", "OBLIQUE", "data row 2: view='OBLIQUE'"),
    ("label_not_a_finding", 1.0, "not a canonical finding"),
])
def test_bad_values_name_row_and_problem(tmp_path, field, value, message):
    records = _records()
    records[1][field] = value
    with pytest.raises(RecordError, match=message):
        RecordTable.from_records(records, root=tmp_path)


def test_duplicate_ids_rejected(tmp_path):
    records = _records()
    records[2]["id"] = "r0"
    with pytest.raises(RecordError, match="data row 3: id 'r0' appears twice"):
        RecordTable.from_records(records, root=tmp_path)


def test_concat_masks_labels_a_source_lacks(tmp_path):
    a = RecordTable.from_records(_records(2), root=tmp_path)
    other = [{"id": "x", "image_path": "x.png", "source": "t", "patient_id": "q", "label_pneumothorax": 1.0}]
    merged = RecordTable.concat([a, RecordTable.from_records(other, root=tmp_path)])
    values = merged.labels(["cardiomegaly", "pneumothorax"])
    assert np.isnan(values[2, 0]) and np.isnan(values[:2, 1]).all() and values[2, 1] == 1


def test_tables_read_through_relative_folders_merge_with_their_own_paths(tmp_path, monkeypatch):
    """Two sources given as paths relative to the working directory (``--data manifest:site1``): each record
    keeps its file, and masks are found (a merged table once re-rooted them all under the first folder)."""
    for site in ("site1", "site2"):
        RecordTable.from_records([{**r, "id": f"{site}_{r['id']}", "patient_id": f"{site}_{r['patient_id']}"}
                                  for r in _records(2)], root=tmp_path / site).write(tmp_path / site)
    monkeypatch.chdir(tmp_path)
    merged = RecordTable.concat([RecordTable.read("site1"), RecordTable.read("site2")])
    assert merged.image_path(2) == (tmp_path / "site2" / "img" / "0.png").resolve()
    assert merged.mask_path(3, "lungs") == (tmp_path / "site2" / "m" / "1.png").resolve()


def test_patient_level_splits_are_deterministic_and_disjoint(tmp_path):
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "s", "patient_id": f"p{i % 50}"}
               for i in range(400)]
    table = RecordTable.from_records(records, root=tmp_path)
    first = assign_splits(table, seed=3)
    check_patient_disjoint(first)
    assert first.frame["split"].tolist() == assign_splits(table, seed=3).frame["split"].tolist()
    assert first.frame["split"].tolist() != assign_splits(table, seed=4).frame["split"].tolist()
    counts = first.frame.groupby("split")["patient_id"].nunique()
    assert set(counts.index) == {"train", "val", "test"} and counts["train"] > counts["test"] > counts["val"]


def test_official_splits_are_kept(tmp_path):
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "s", "patient_id": f"p{i}",
                "split": "test" if i < 3 else ""} for i in range(20)]
    out = assign_splits(RecordTable.from_records(records, root=tmp_path), seed=0)
    assert (out.frame["split"][:3] == "test").all()
    assert isinstance(out.frame, pd.DataFrame)


def test_concat_refuses_ids_two_sources_share(tmp_path):
    a = RecordTable.from_records(_records(2), root=tmp_path)
    clash = [{"id": "r1", "image_path": "x.png", "source": "t", "patient_id": "q"}]
    with pytest.raises(RecordError, match=r"^a and b share 1 record ids \(first 'r1'\);"):
        RecordTable.concat([a, RecordTable.from_records(clash, root=tmp_path)], ["a", "b"])
    same_patient = [{"id": "x", "image_path": "x.png", "source": "t", "patient_id": "p0"}]
    with pytest.raises(RecordError, match=r"^table 1 and table 2 share 1 patient ids;") as caught:
        RecordTable.concat([a, RecordTable.from_records(same_patient, root=tmp_path)])
    assert "p0" not in str(caught.value)  # patient ids can come from DICOM PatientID: counted, never named


def test_load_tables_names_both_sources_of_a_clash(tmp_path):
    a, b = fx.build_manifest(tmp_path / "site_a"), fx.build_manifest(tmp_path / "site_b")
    names = re.escape(f"manifest:{a} and manifest:{b}")
    with pytest.raises(RecordError, match=rf"{names} share 2 record ids \(first 'img/a.png'\) and 2 patient ids"):
        load_tables([("manifest", str(a)), ("manifest", str(b))], DEFAULT_FRACTIONS, 0)
    manifest = pd.read_csv(b / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.assign(id="b_" + manifest["image_path"], patient_id="b_" + manifest["patient_id"]).to_csv(
        b / "manifest.csv", index=False)
    merged = load_tables([("manifest", str(a)), ("manifest", str(b))], DEFAULT_FRACTIONS, 0)
    assert len(merged) == 4 and merged.frame["patient_id"].nunique() == 4


def test_ids_compare_as_written_whatever_the_column_type(tmp_path):
    """The same patients as whole numbers in an int column and in a float one (a gap made it float), and with the
    space DICOM pads odd-length values with, are the same ids; an empty patient id is refused by row."""
    ints = pd.DataFrame({"id": [1, 2], "image_path": ["a.png", "b.png"], "source": "s", "patient_id": [7, 12]})
    floats = ints.assign(patient_id=[7.0, 12.0], study_id=[3.0, np.nan])
    padded = ints.assign(patient_id=["7 ", " 12"], id=["1 ", "2"])
    tables = [RecordTable(frame, tmp_path) for frame in (ints, floats, padded)]
    for table in tables:
        assert table.frame["patient_id"].tolist() == ["7", "12"] and table.frame["id"].tolist() == ["1", "2"]
    assert tables[1].frame["study_id"].tolist() == ["3", ""]
    with pytest.raises(RecordError, match="data row 2: empty patient_id"):
        RecordTable(ints.assign(patient_id=[7.0, np.nan]), tmp_path)


@pytest.mark.parametrize(("value", "shown"), [(2, "label_cardiomegaly=2;"), (0.5, "label_cardiomegaly=0.5;"),
                                              ("yes", "label_cardiomegaly='yes';")])
def test_refused_label_values_are_shown_as_written_not_as_numpy_reprs(tmp_path, value, shown):
    """A manifest's label column reads as int64 or float64: the message shows ``2``, not ``np.int64(2)``."""
    from radlab.data.sources.common import SourceFormatError, chexpert_value

    column = [1, 0, value] if isinstance(value, int) else [1.0, 0.0, value]
    records = [{**r, "label_cardiomegaly": column[i]} for i, r in enumerate(_records(3))]
    with pytest.raises(RecordError, match=re.escape(f"data row 3: {shown}")) as err:
        RecordTable.from_records(records, root=tmp_path)
    assert "np." not in str(err.value)
    with pytest.raises(SourceFormatError, match=r"Cardiomegaly=2; expected") as err:
        chexpert_value(np.int64(2), "labels.csv", 0, "Cardiomegaly")
    assert "np." not in str(err.value)
