import logging

import numpy as np
import pytest

from data import fixtures as fx
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
