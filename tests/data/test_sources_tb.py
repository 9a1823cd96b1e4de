import numpy as np
from PIL import Image

from data import fixtures as fx
from radlab.data.sources.tb_sets import MontgomerySource, ShenzhenSource


def test_montgomery_readings_labels_and_lung_masks(tmp_path):
    table = MontgomerySource(mask_dir=tmp_path / "out" / "masks").load(fx.build_montgomery(tmp_path / "mc"))
    frame = table.frame.set_index("id")
    normal, tb = frame.loc["montgomery_MCUCXR_0001_0"], frame.loc["montgomery_MCUCXR_0104_1"]
    assert (normal["sex"], normal["age"], normal["label_no_finding"], normal["label_tuberculosis"]) == ("F", 27.0, 1, 0)
    assert tb["label_tuberculosis"] == 1 and tb["impression"] == "right upper lobe cavitary tuberculosis"
    lungs = np.asarray(Image.open(table.mask_path(0, "lungs"))) > 0
    left = np.asarray(Image.open(table.mask_path(0, "lung_left"))) > 0
    right = np.asarray(Image.open(table.mask_path(0, "lung_right"))) > 0
    np.testing.assert_array_equal(lungs, left | right)
    assert "mask_lungs" not in MontgomerySource().load(tmp_path / "mc").frame  # derived only with mask_dir


def test_shenzhen_reading_variants_and_masks(tmp_path):
    table = ShenzhenSource().load(fx.build_shenzhen(tmp_path))
    frame = table.frame.set_index("id")
    assert (frame.loc["shenzhen_CHNCXR_0001_0", "sex"], frame.loc["shenzhen_CHNCXR_0001_0", "age"]) == ("M", 45.0)
    assert frame.loc["shenzhen_CHNCXR_0327_1", "sex"] == "F"  # "femal"
    assert abs(frame.loc["shenzhen_CHNCXR_0400_1", "age"] - 16 / 12) < 1e-6  # "16month"
    assert frame.loc["shenzhen_CHNCXR_0400_1", "impression"] == "bilateral PTB"
    ages = {"0002_0": ("F", 24.0), "0003_0": ("M", 35.0), "0330_1": ("M", 29.0), "0331_1": ("F", 35.0),
            "0332_1": ("M", 42.0)}  # "female24yrs", "male35yrs", "male , 29yrs", "female 35yrs", "male 42"
    assert {k: tuple(frame.loc[f"shenzhen_CHNCXR_{k}", ["sex", "age"]]) for k in ages} == ages
    assert frame.loc["shenzhen_CHNCXR_0330_1", "impression"] == "bilateral secondary PTB"
    assert table.mask_path(0, "lungs").exists() and table.mask_path(1, "lungs") is None


def test_montgomery_same_patient_notes_join_patients_and_no_report_stays_empty(tmp_path):
    frame = MontgomerySource().load(fx.build_montgomery(tmp_path)).frame.set_index("id")
    assert frame.loc["montgomery_MCUCXR_0166_1", "patient_id"] == frame.loc["montgomery_MCUCXR_0162_1", "patient_id"]
    assert frame.loc["montgomery_MCUCXR_0117_1", "patient_id"] == "montgomery_0113"
    assert frame["patient_id"].nunique() == len(frame) - 2 and frame["study_id"].nunique() == len(frame)
    no_report = frame.loc["montgomery_MCUCXR_0166_1"]
    assert no_report["impression"] == no_report["report"] == "" and no_report["label_tuberculosis"] == 1
    assert frame.loc["montgomery_MCUCXR_0117_1", "impression"] == "stable CXR since 6M; off Rx since 6M"
