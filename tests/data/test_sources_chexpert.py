import numpy as np
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


def test_chexpert_bad_label_value_is_named(tmp_path):
    root = fx.build_chexpert(tmp_path)
    (root / "valid.csv").write_text((root / "valid.csv").read_text().replace(",0.0,1.0,1.0,", ",0.0,2.0,1.0,", 1))
    with pytest.raises(SourceFormatError, match=r"valid.csv: data row 1: Enlarged Cardiomediastinum='?2.0'?"):
        CheXpertSource().load(root)
