import json
import logging

import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.images import read_image
from radlab.data.records import label_column
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.vindr import (
    KAGGLE_CLASSES,
    KAGGLE_MAP,
    LABEL_MAP,
    UNMAPPED,
    VinDrSource,
    layout,
    vote,
)
from radlab.data.taxonomy import FINDING_NAMES, ancestors


def test_vindr_votes_readers_and_keeps_their_labels(tmp_path):
    table = VinDrSource().load(fx.build_vindr(tmp_path))
    frame = table.frame.set_index("id")
    sick = frame.loc["vindr_000434271f63a053c4128a0ba6352c7f"]
    assert sick["label_cardiomegaly"] == 1  # 3 of 3 readers
    assert sick["label_aortic_enlargement"] == -1 and sick["label_fracture"] == -1  # 1 of 3: readers disagree
    assert sick["label_pneumothorax"] == 0
    readers = json.loads(sick["reader_labels"])
    assert set(readers) == {"R2", "R3", "R6"} and readers["R6"] == ["Cardiomegaly", "Rib fracture"]
    assert json.loads(sick["boxes"])[0] == {"finding": "cardiomegaly", "native": "Cardiomegaly", "x": 691.0,
                                            "y": 1375.0, "w": 962.0, "h": 456.0, "reader": "R2"}
    assert (sick["sex"], sick["age"], sick["split"]) == ("M", 62.0, "train")
    test = frame.loc["vindr_002a34c58c5b758217ed1f584ccbcfe9"]
    assert test["split"] == "test" and test["label_lung_lesion"] == 1 and test["sex"] == ""
    assert np.isnan(frame.loc["vindr_00053190460d56c53cc3e57321387478", "age"])
    pixels = read_image(table.image_path(0))  # MONOCHROME1 DICOM, inverted on reading
    assert 0 <= pixels.min() and pixels.max() <= 1


def test_vote_rule():
    assert vote([1, 1, 0]) == 1 and vote([0, 0, 0]) == 0 and vote([1, 0, 0]) == -1 and np.isnan(vote([np.nan]))
    # a parent only a positive child sets is NaN for the other readers: it follows the child's vote
    assert vote([1, np.nan, np.nan]) == -1 and vote([1, 1, np.nan]) == 1 and np.isnan(vote([np.nan, np.nan]))


def kaggle_frame(tmp_path):
    return VinDrSource().load(fx.build_vindr_kaggle(tmp_path)).frame.set_index("id")


def test_vindr_kaggle_layout_labels_each_reader_from_its_boxes_then_votes(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="radlab.data.sources.vindr"):
        frame = kaggle_frame(tmp_path)
    assert "1 unlabelled images" in caplog.text and "vindr_002a34c58c5b758217ed1f584ccbcfe9" not in frame.index
    sick = frame.loc["vindr_9a5094b2563a1ef3ff50dc5c7ff71345"]
    assert sick["label_cardiomegaly"] == 1 and sick["label_enlarged_cardiomediastinum"] == 1  # 3 of 3 readers
    assert sick["label_pleural_effusion"] == -1 and sick["label_aortic_enlargement"] == -1  # 1 of 3
    assert sick["label_pneumothorax"] == 0 and sick["label_lung_lesion"] == 0 and sick["label_no_finding"] == 0
    assert json.loads(sick["reader_labels"]) == {"R10": ["Aortic enlargement", "Cardiomegaly"], "R8": ["Cardiomegaly"],
                                                 "R9": ["Cardiomegaly", "Other lesion", "Pleural effusion"]}
    boxes = json.loads(sick["boxes"])
    assert len(boxes) == 6 and boxes[0] == {"finding": "cardiomegaly", "native": "Cardiomegaly", "x": 691.0,
                                            "y": 1375.0, "w": 962.0, "h": 456.0, "reader": "R10"}
    assert {"finding": "", "native": "Other lesion", "reader": "R9"}.items() <= boxes[3].items()
    assert (sick["sex"], sick["age"], sick["split"], sick["image_path"]) == (
        "M", 62.0, "", "train/9a5094b2563a1ef3ff50dc5c7ff71345.dicom")
    normal = frame.loc["vindr_50a418190bc3fb1ef1633bf9678929b3"]
    assert normal["label_no_finding"] == 1 and normal["label_cardiomegaly"] == 0 and normal["boxes"] == "[]"
    assert set(json.loads(normal["reader_labels"])) == {"R11", "R7", "R10"} and np.isnan(normal["age"])
    split = frame.loc["vindr_051132a778e61a86eb147c7c6f564dfe"]
    assert split["label_aortic_enlargement"] == 1 and split["label_no_finding"] == -1  # R9 alone found nothing
    assert split["sex"] == "" and (frame["split"] == "").all()  # the labelled pool: splits are drawn by patient


def test_vindr_kaggle_leaves_what_the_competition_cannot_express_nan(tmp_path):
    frame = kaggle_frame(tmp_path)
    mapped = set(KAGGLE_MAP.values())
    parents = {p for n in mapped for p in ancestors(n)} - mapped  # set only by a positive child
    for name in FINDING_NAMES:
        column = frame[label_column(name)]
        if name in mapped:
            assert column.notna().all(), name
        elif name not in parents:
            assert column.isna().all(), name  # fracture, edema, pneumonia, tuberculosis, copd, ...
    assert "fracture" not in mapped | parents and "pneumonia" not in mapped | parents


def test_every_kaggle_class_maps_through_the_physionet_label_map():
    assert len(KAGGLE_CLASSES) == 15 and list(KAGGLE_CLASSES) == fx.VINDR_KAGGLE_CLASSES
    assert all(c in LABEL_MAP or c in UNMAPPED for c in KAGGLE_CLASSES)
    assert KAGGLE_MAP == {c: LABEL_MAP[c] for c in KAGGLE_CLASSES if c != "Other lesion"}


def test_vindr_layout_is_told_by_its_files(tmp_path):
    assert layout(fx.build_vindr(tmp_path / "physionet")) == "physionet"
    assert layout(fx.build_vindr_kaggle(tmp_path / "kaggle")) == "kaggle"
    fx.csv(tmp_path / "other" / "train.csv", pd.DataFrame({"image_id": ["a"], "label": [1]}))
    for root in (tmp_path / "other", tmp_path / "empty"):
        with pytest.raises(FileNotFoundError, match=rf"{root} holds neither VinDr-CXR layout: PhysioNet v1.0.0 "
                                                    r"needs annotations/image_labels_train.csv.*Kaggle.*train.csv"):
            VinDrSource().load(root)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("Cardiomegaly,3,R10", "Cardiomegaly,4,R10", r"data row 2: class 'Cardiomegaly' with class_id 4"),
    ("Pleural effusion,10", "Edema,10", r"data row 4: class 'Edema' with class_id 10"),
    (",No finding,14,R9,", ",No finding,14,R10,", r"data row 11: reader R10 marks both 'No finding' and findings"),
])
def test_vindr_kaggle_bad_rows_are_named(tmp_path, old, new, problem):
    path = fx.build_vindr_kaggle(tmp_path) / "train.csv"
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(SourceFormatError, match=rf"train.csv: {problem}"):
        VinDrSource().load(tmp_path)
