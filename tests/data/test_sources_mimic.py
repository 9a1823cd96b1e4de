import logging

import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.mimic_cxr import MIMICCXRSource


def test_mimic_split_views_reports_labels_and_ages(tmp_path):
    frame = MIMICCXRSource().load(fx.build_mimic(tmp_path)).frame.set_index("id")
    pa = frame.loc["mimic_02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    assert pa["image_path"] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert (pa["patient_id"], pa["study_id"], pa["split"], pa["view"]) == ("mimic_10000032", "mimic_s50414267", "train", "PA")
    assert pa["findings"].startswith("There is a small left pleural effusion") and "INDICATION" not in pa["report"]
    assert pa["label_pleural_effusion"] == 1 and pa["label_pneumothorax"] == 0 and np.isnan(pa["label_edema"])
    assert (pa["sex"], pa["age"]) == ("F", 52.0)
    assert frame.loc["mimic_174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "view"] == "LAT"
    val = frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"]
    assert val["split"] == "val" and val["label_cardiomegaly"] == -1 and val["age"] == 78.0  # 76 + (2180 - 2178)
    other = frame.loc["mimic_6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d"]
    assert other["view"] == "" and other["split"] == "test" and np.isnan(other["label_pleural_effusion"])
    assert other["sex"] == "F" and np.isnan(other["age"])  # anchor_age 91 is MIMIC-IV's top code for over 89


def test_mimic_negbio_labels_and_no_patients_file(tmp_path):
    root = fx.build_mimic(tmp_path, with_patients=False)
    frame = MIMICCXRSource(labeler="negbio").load(root).frame.set_index("id")
    val = frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"]
    assert val["label_cardiomegaly"] == 1 and val["sex"] == "" and np.isnan(val["age"])
    with pytest.raises(ValueError, match="labeler must be one of"):
        MIMICCXRSource(labeler="chexbert")


@pytest.mark.parametrize("labeler", ["chexpert", "negbio"])
def test_mimic_blank_no_finding_beside_a_finding_is_negative(tmp_path, labeler):
    frame = MIMICCXRSource(labeler=labeler).load(fx.build_mimic(tmp_path)).frame.set_index("id")
    effusion = frame.loc["mimic_02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]  # No Finding blank, effusion 1
    assert effusion["label_no_finding"] == 0 and np.isnan(effusion["label_edema"])
    assert frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "label_no_finding"] == 0  # beside -1 / 1
    assert np.isnan(frame.loc["mimic_6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d", "label_no_finding"])  # no row


def test_mimic_reports_in_the_providers_files_tree_and_a_warning_without_any(tmp_path, caplog):
    root = fx.build_mimic(tmp_path)
    (root / "mimic-cxr-reports.zip").unlink()
    (root / "files/p10/p10000032/s50414267.txt").write_text(fx.MIMIC_REPORT)  # beside the study's JPG folder
    frame = MIMICCXRSource().load(root).frame.set_index("study_id")
    assert frame.loc["mimic_s50414267", "findings"].iloc[0].startswith("There is a small left pleural effusion")
    assert frame.loc["mimic_s57375967", "report"] == ""
    (root / "files/p10/p10000032/s50414267.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="radlab.data.sources.mimic_cxr"):
        assert (MIMICCXRSource().load(root).frame["report"] == "").all()
    assert "none of 3 studies has a report" in caplog.text and "files/pXX/pSUBJECT/sSTUDY.txt" in caplog.text
    assert "mimic-cxr-reports.zip" in caplog.text and str(root) in caplog.text


# mimic-cxr-2.1.0-test-set-labeled.csv as PhysioNet ships it: study_id, then the 14 observations in the CheXpert
# labeler's order, "Lung Opacity" under its earlier name "Airspace Opacity"; cells 1.0, 0.0, -1.0 or blank.
TEST_SET_COLUMNS = ["study_id", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
                    "Airspace Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
                    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
TEST_STUDY, TEST_IMAGE = 50771383, "mimic_6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d"  # the fixture's test study
TRAIN_IMAGE = "mimic_02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"


def write_test_set(root, rows):
    """rows: (study_id, {column: cell}) pairs; unnamed cells blank."""
    lines = [",".join(TEST_SET_COLUMNS)]
    lines += [",".join([str(study)] + [cells.get(c, "") for c in TEST_SET_COLUMNS[1:]]) for study, cells in rows]
    (root / "mimic-cxr-2.1.0-test-set-labeled.csv").write_text("\n".join(lines) + "\n")


def label_test_study_by_labeler(root):
    """Give the fixture's test study a labeler row too (edema and effusion positive), to see what replaces it."""
    path = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    frame = pd.read_csv(path)
    row = {"subject_id": 10000898, "study_id": TEST_STUDY, "Edema": 1.0, "Pleural Effusion": 1.0}
    fx.csv(path, pd.concat([frame, pd.DataFrame([row])], ignore_index=True), compress=True)


def test_mimic_test_split_studies_take_the_radiologist_labels(tmp_path, caplog):
    root = fx.build_mimic(tmp_path)
    label_test_study_by_labeler(root)
    write_test_set(root, [(TEST_STUDY, {"Airspace Opacity": "1.0", "Edema": "0.0", "Pneumothorax": "-1.0"}),
                          (50414267, {"Pleural Effusion": "0.0"}),  # a train-split study: not used
                          (59999999, {"No Finding": "1.0"})])  # no images in the metadata
    with caplog.at_level(logging.INFO, logger="radlab.data.sources.mimic_cxr"):
        frame = MIMICCXRSource().load(root).frame.set_index("id")
    test = frame.loc[TEST_IMAGE]
    assert test["label_lung_opacity"] == 1 and test["label_pneumothorax"] == -1
    assert test["label_edema"] == 0  # the radiologist's 0 replaces the labeler's 1
    assert np.isnan(test["label_pleural_effusion"])  # all 14 replaced, never merged: blank is not the labeler's 1
    assert np.isnan(test["label_no_finding"])  # read as written: the labelers' blank-No-Finding rule is not applied
    assert (test["split"], test["patient_id"], test["study_id"]) == ("test", "mimic_10000898", "mimic_s50771383")
    assert frame.loc[TRAIN_IMAGE, "label_pleural_effusion"] == 1  # train studies keep the labeler's labels
    assert "1 of 1 test-split studies take the radiologist labels of mimic-cxr-2.1.0-test-set-labeled.csv" in caplog.text
    assert "2 of 3 studies in mimic-cxr-2.1.0-test-set-labeled.csv are not test-split studies" in caplog.text
    assert "1 in train/validate, kept with the chexpert labels; 1 without images" in caplog.text
    labeler = MIMICCXRSource(test_labels="labeler").load(root).frame.set_index("id").loc[TEST_IMAGE]
    assert labeler["label_edema"] == 1 and labeler["label_pleural_effusion"] == 1


def test_mimic_radiologist_only_leaves_unlisted_test_studies_unannotated(tmp_path):
    root = fx.build_mimic(tmp_path)
    label_test_study_by_labeler(root)
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.1.0-test-set-labeled.csv"):
        MIMICCXRSource(test_labels="radiologist_only").load(root)
    write_test_set(root, [(57375967, {"Cardiomegaly": "1.0"})])  # lists a validate study only
    kept = MIMICCXRSource().load(root).frame.set_index("id").loc[TEST_IMAGE]
    assert kept["label_edema"] == 1  # default: a test study the file does not list keeps the labeler's labels
    frame = MIMICCXRSource(test_labels="radiologist_only").load(root).frame.set_index("id")
    labels = [c for c in frame.columns if c.startswith("label_")]
    assert frame.loc[TEST_IMAGE, labels].isna().all()
    assert frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "label_cardiomegaly"] == -1  # validate
    with pytest.raises(ValueError, match="test_labels must be one of"):
        MIMICCXRSource(test_labels="radiologists")


@pytest.mark.parametrize(("rows", "problem"), [
    ([(TEST_STUDY, {"Edema": "2.0"})], r"data row 1: Edema=2(\.0)?; expected 1, 0, -1 or blank"),
    ([(TEST_STUDY, {}), (TEST_STUDY, {})], rf"data row 2: study_id {TEST_STUDY} is listed twice"),
    ([(f"s{TEST_STUDY}", {})], rf"data row 1: study_id='s{TEST_STUDY}' is not a MIMIC study number"),
])
def test_mimic_bad_test_set_row_is_named(tmp_path, rows, problem):
    root = fx.build_mimic(tmp_path)
    write_test_set(root, rows)
    with pytest.raises(SourceFormatError, match=r"mimic-cxr-2.1.0-test-set-labeled.csv: " + problem):
        MIMICCXRSource().load(root)


def test_mimic_test_set_with_lung_opacity_heading_is_refused_by_name(tmp_path):
    root = fx.build_mimic(tmp_path)
    write_test_set(root, [(TEST_STUDY, {})])
    path = root / "mimic-cxr-2.1.0-test-set-labeled.csv"
    path.write_text(path.read_text().replace("Airspace Opacity", "Lung Opacity"))
    with pytest.raises(SourceFormatError, match=r"test-set-labeled.csv: missing column\(s\) \['Airspace Opacity'\]"):
        MIMICCXRSource().load(root)
