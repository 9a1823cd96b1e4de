import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.sources.chexpert import CheXpertSource
from radlab.data.sources.common import SourceFormatError


def test_chexpert_keeps_uncertain_masks_blanks_and_all_views(tmp_path):
    frame = CheXpertSource().load(fx.build_chexpert(tmp_path)).frame.set_index("id")
    lateral = frame.loc["chexpert_train_patient00002_study2_view2_lateral"]
    assert lateral["view"] == "LAT" and lateral["image_path"] == "train/patient00002/study2/view2_lateral.jpg"
    assert lateral["label_cardiomegaly"] == -1 and lateral["label_lung_opacity"] == 1 and lateral["label_fracture"] == 1
    assert np.isnan(lateral["label_pneumonia"])  # blank: not mentioned, never negative
    first = frame.loc["chexpert_train_patient00001_study1_view1_frontal"]
    assert first["label_pneumothorax"] == 0 and np.isnan(first["label_cardiomegaly"])
    assert (first["sex"], first["age"], first["view"], first["split"]) == ("F", 68.0, "AP", "train")
    assert frame.loc["chexpert_valid_patient64541_study1_view1_frontal", "split"] == "val"
    assert frame["patient_id"].nunique() == 4
    unknown_age = frame.loc["chexpert_train_patient00003_study1_view1_frontal"]
    assert np.isnan(unknown_age["age"]) and unknown_age["sex"] == "M"  # Age 0: CheXpert's code for unknown


def test_chexpert_labeler_blank_no_finding_is_negative_beside_a_finding(tmp_path):
    """The labeler writes No Finding as 1 or blank: blank beside a positive or uncertain finding means 0."""
    head = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(fx.CHEXPERT_LABELS) + "\n"
    cells = {"edema": [""] * 5 + ["1.0"] + [""] * 8, "uncertain": [""] * 8 + ["-1.0"] + [""] * 5,
             "normal": ["1.0"] + [""] * 13, "devices": [""] * 13 + ["1.0"], "negatives": [""] * 9 + ["0.0"] + [""] * 4}
    rows = [f"CheXpert-v1.0-small/train/patient0000{i}/study1/view1_frontal.jpg,Male,50,Frontal,PA," + ",".join(c)
            for i, c in enumerate(cells.values())]
    (tmp_path / "train.csv").write_text(head + "\n".join(rows) + "\n")
    (tmp_path / "valid.csv").write_text(head + "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,"
                                        "Male,73,Frontal,AP," + ",".join(["0.0"] * 14) + "\n")
    frame = CheXpertSource().load(tmp_path).frame
    no_finding = dict(zip([*cells, "valid"], frame["label_no_finding"], strict=True))
    assert (no_finding["edema"], no_finding["uncertain"], no_finding["normal"], no_finding["valid"]) == (0, 0, 1, 0)
    assert np.isnan(no_finding["devices"]) and np.isnan(no_finding["negatives"])  # the labeler would have written 1
    assert np.isnan(frame["label_pneumonia"].iloc[0])  # other blanks: still not mentioned


def test_chexpert_bad_label_value_is_named(tmp_path):
    root = fx.build_chexpert(tmp_path)
    (root / "valid.csv").write_text((root / "valid.csv").read_text().replace(",0.0,1.0,1.0,", ",0.0,2.0,1.0,", 1))
    with pytest.raises(SourceFormatError, match=r"valid.csv: data row 1: Enlarged Cardiomediastinum='?2.0'?"):
        CheXpertSource().load(root)


def test_chexpert_test_set_loads_as_the_test_split_beside_train_and_valid(tmp_path):
    release = CheXpertSource().load(fx.build_chexpert(tmp_path / "release")).frame
    table = CheXpertSource().load(fx.build_chexpert_test(fx.build_chexpert(tmp_path / "both")))
    frame = table.frame.set_index("id")
    pd.testing.assert_frame_equal(table.frame[table.frame["split"] != "test"].reset_index(drop=True), release)
    test = frame[frame["split"] == "test"]
    assert sorted(test.index) == ["chexpert_test_patient64741_study1_view1_frontal",
                                  "chexpert_test_patient64741_study1_view2_lateral",
                                  "chexpert_test_patient64750_study1_view1_frontal"]
    lateral = test.loc["chexpert_test_patient64741_study1_view2_lateral"]
    assert lateral["image_path"] == "test/patient64741/study1/view2_lateral.jpg" and lateral["view"] == "LAT"
    assert (lateral["patient_id"], lateral["study_id"]) == ("chexpert_patient64741", "chexpert_patient64741_study1")
    assert lateral["label_cardiomegaly"] == 1 and lateral["label_support_devices"] == 1
    assert lateral["label_pneumonia"] == 0 and lateral["label_no_finding"] == 0  # consensus: 0 is read, not blank
    normal = test.loc["chexpert_test_patient64750_study1_view1_frontal"]
    assert normal["label_no_finding"] == 1 and normal["label_edema"] == 0 and normal["view"] == "FRONTAL"
    assert (test["sex"] == "").all() and test["age"].isna().all()  # the test CSV has no demographics
    assert np.isnan(normal["label_nodule"])  # a finding CheXpert does not label stays NaN
    assert all(table.image_path(i).exists() for i in range(len(table)))


def test_chexpert_test_only_root_loads(tmp_path):
    table = CheXpertSource().load(fx.build_chexpert_test(tmp_path / "CheXpert"))
    assert len(table) == 3 and (table.frame["split"] == "test").all()
    assert table.frame["patient_id"].nunique() == 2
    assert all(table.image_path(i).exists() for i in range(len(table)))


def test_chexpert_root_without_label_files_names_what_it_expects(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds none of train.csv, valid.csv, test_labels.csv") as error:
        CheXpertSource().load(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_chexpert_train_without_valid_is_still_incomplete(tmp_path):
    root = fx.build_chexpert_test(fx.build_chexpert(tmp_path))
    (root / "valid.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid.csv"):
        CheXpertSource().load(root)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("frontal.jpg,1,0,0", "frontal.jpg,1,-1,0", r"Enlarged Cardiomediastinum=-1(\.0)?; the test set's consensus"),
    ("frontal.jpg,1,0,0", "frontal.jpg,1,,0", r"Enlarged Cardiomediastinum=blank; the test set's consensus"),
    ("test/patient64750/study1/view1_frontal.jpg", "test/patient64750/view1_frontal.jpg", r"Path 'test/patient64750"),
    ("test/patient64750/study1/view1_frontal.jpg", "test/patient64750/study1/view1.jpg",
     r"Path 'test/patient64750/study1/view1.jpg': file name is not viewN_frontal"),
])
def test_chexpert_bad_test_row_is_named(tmp_path, old, new, problem):
    root = fx.build_chexpert_test(tmp_path)
    (root / "test_labels.csv").write_text((root / "test_labels.csv").read_text().replace(old, new))
    with pytest.raises(SourceFormatError, match=r"test_labels.csv: data row 3: " + problem):
        CheXpertSource().load(root)
