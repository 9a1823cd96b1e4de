import json

import numpy as np
import pytest

from data import fixtures as fx
from radlab.data.loading import load_tables
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.nih import NIHSource


def test_nih_labels_splits_boxes_and_demographics(tmp_path):
    table = NIHSource().load(fx.build_nih(tmp_path))
    frame = table.frame.set_index("id")
    assert frame.loc["nih_00000001_001", "image_path"] == "images_001/images/00000001_001.png"
    assert frame["split"].to_dict() == {"nih_00000001_000": "train", "nih_00000001_001": "train",
                                        "nih_00000002_000": "train", "nih_00000003_000": "test"}
    row = frame.loc["nih_00000001_001"]
    assert row["label_cardiomegaly"] == 1 and row["label_emphysema"] == 1 and row["label_pneumothorax"] == 0
    assert row["label_enlarged_cardiomediastinum"] == 1  # parent of a positive child
    assert frame.loc["nih_00000002_000", "label_no_finding"] == 1
    assert np.isnan(frame.loc["nih_00000002_000", "label_lung_opacity"])  # NIH does not annotate it
    assert np.isnan(frame.loc["nih_00000003_000", "label_fracture"])
    assert (row["sex"], row["age"], row["view"]) == ("M", 58.0, "PA")
    assert np.isnan(frame.loc["nih_00000003_000", "age"])  # the provider's 413-year-old
    boxes = json.loads(frame.loc["nih_00000003_000", "boxes"])
    assert [b["finding"] for b in boxes] == ["nodule", "infiltration"] and boxes[0]["w"] == pytest.approx(86.77)
    assert frame.loc["nih_00000001_000", "boxes"] == ""  # not box-annotated, which is not "no boxes"


def test_nih_kaggle_sample_layout(tmp_path):
    """sample_labels.csv with PNGs in sample/images/: the same records, no provider split, so load_tables draws
    patient-level splits (both images of patient 13 land together)."""
    root = fx.build_nih_sample(tmp_path / "nih_sample")
    frame = NIHSource().load(root).frame.set_index("id")
    assert frame.loc["nih_00000013_026", "image_path"] == "sample/images/00000013_026.png"
    assert (root / frame.loc["nih_00000013_026", "image_path"]).is_file()
    assert set(frame["split"]) == {""}
    row = frame.loc["nih_00000032_001"]
    assert (row["sex"], row["age"], row["patient_id"], row["study_id"]) == ("F", 55.0, "nih_00032", "nih_00032_001")
    assert row["label_pleural_effusion"] == 1 and row["label_edema"] == 1 and row["label_pneumothorax"] == 0
    assert frame.loc["nih_00000013_005", "label_pleural_thickening"] == 1
    assert frame.loc["nih_00000017_001", "label_no_finding"] == 1
    splits = load_tables([("nih", str(root))], {"train": 0.5, "test": 0.5}, seed=0).frame
    assert set(splits["split"]) <= {"train", "test"} and "" not in set(splits["split"])
    assert splits.groupby("patient_id")["split"].nunique().max() == 1


def test_nih_unknown_label_names_file_and_row(tmp_path):
    root = fx.build_nih(tmp_path)
    entry = root / "Data_Entry_2017.csv"
    entry.write_text(entry.read_text().replace("Nodule|Effusion", "Nodule|Efusion"))
    with pytest.raises(SourceFormatError, match=r"Data_Entry_2017.csv: data row 4: unknown finding label\(s\) \['Efusion'\]"):
        NIHSource().load(root)
