import json
import logging

import numpy as np
import pytest

from data import fixtures as fx
from radlab.data.images import read_image
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.rsna import RSNAPneumoniaSource
from radlab.data.splits import assign_splits


def test_rsna_target_class_boxes_and_dicom_header(tmp_path):
    table = RSNAPneumoniaSource().load(fx.build_rsna(tmp_path))
    frame = table.frame.set_index("id")
    positive = frame.loc["rsna_00436515-870c-4b36-a041-de91049b9ab4"]
    assert positive["label_pneumonia"] == 1 and positive["label_lung_opacity"] == 1 and positive["label_no_finding"] == 0
    assert len(json.loads(positive["boxes"])) == 2
    assert (positive["view"], positive["sex"], positive["age"]) == ("AP", "M", 48.0)
    normal = frame.loc["rsna_00313ee0-9eaa-42f4-b0ab-c148ed3241cd"]
    assert normal["label_no_finding"] == 1 and normal["label_pneumonia"] == 0 and normal["label_lung_opacity"] == 0
    other = frame.loc["rsna_0004cfab-14fd-4e49-80ba-63a80b6bddd6"]  # "No Lung Opacity / Not Normal"
    assert other["label_no_finding"] == 0 and other["label_pneumonia"] == 0
    assert np.isnan(other["label_lung_opacity"])  # its abnormalities may be opacities other than pneumonia's
    pixels = read_image(table.image_path(0))  # JPEG baseline DICOM through pylibjpeg
    assert pixels.shape == (24, 20) and pixels.max() > 0.5


def test_rsna_skips_unlabelled_test_images_and_draws_a_labelled_test_split(tmp_path, caplog):
    root = fx.add_rsna_normals(fx.build_rsna(tmp_path), 9)
    with caplog.at_level(logging.INFO, logger="radlab.data.sources.rsna"):
        table = RSNAPneumoniaSource().load(root)
    assert "rsna_0000a175-0e68-4ca4-b1af-167204a7e0bc" not in set(table.frame["id"])
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        f"rsna_pneumonia: 1 unlabelled images in {root / 'stage_2_test_images'} (the competition's test set) "
        "skipped; the 12 labelled images carry no official split"]
    assert (table.frame["split"] == "").all()  # the competition's labelled pool, not a train split
    frame = assign_splits(table, seed=0).frame
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame["label_pneumonia"].notna().all()


def test_rsna_target_disagreeing_with_class_is_named(tmp_path):
    root = fx.build_rsna(tmp_path)
    path = root / "stage_2_detailed_class_info.csv"
    path.write_text(path.read_text().replace(",Lung Opacity\n", ",Normal\n"))
    with pytest.raises(SourceFormatError, match=r"stage_2_train_labels.csv: data row 2: Target=1 disagrees"):
        RSNAPneumoniaSource().load(root)
