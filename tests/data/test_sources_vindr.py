import json

import numpy as np

from data import fixtures as fx
from radlab.data.images import read_image
from radlab.data.sources.vindr import VinDrSource, vote


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
