import logging
import re

import numpy as np
import pytest
from PIL import Image

from data import fixtures as fx
from radlab.data.sources.siim import SIIMSource, decode_rle
from radlab.data.splits import assign_splits

POSITIVE = "siim_1.2.276.0.7230010.3.1.4.8323329.13666.1517875247.117800"
NEGATIVE = "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"


def test_siim_masks_are_decoded_only_into_mask_dir(tmp_path):
    root = fx.build_siim(tmp_path / "siim")
    before = sorted(p.name for p in root.rglob("*"))
    table = SIIMSource(mask_dir=tmp_path / "out" / "masks").load(root)
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written into the provider's folder
    frame = table.frame.set_index("id")
    assert frame.loc[POSITIVE, "label_pneumothorax"] == 1 and frame.loc[NEGATIVE, "label_pneumothorax"] == 0
    mask = np.asarray(Image.open(table.mask_path(table.frame.index[table.frame["id"] == POSITIVE][0], "pneumothorax")))
    np.testing.assert_array_equal(mask, fx.siim_mask())  # two RLE rows, one union
    empty = np.asarray(Image.open(frame.loc[NEGATIVE, "mask_pneumothorax"]))
    assert empty.shape == (24, 20) and not empty.any()
    assert frame.loc[POSITIVE, "patient_id"] == "siim_17d405a3-a0d2-4901-b33a-63906aa48d91"
    assert f"siim_{fx.SIIM_STAGE1_TEST}" not in frame.index  # stage 1's test image carries no label


def test_siim_without_mask_dir_has_labels_only(tmp_path):
    frame = SIIMSource().load(fx.build_siim(tmp_path)).frame
    assert "mask_pneumothorax" not in frame and frame["label_pneumothorax"].notna().sum() == 2


def test_relative_rle_round_trip_and_errors():
    mask = fx.siim_mask()
    np.testing.assert_array_equal(decode_rle(fx.relative_rle(mask), 24, 20), mask)
    with pytest.raises(ValueError, match="leaves the 24x20 image"):
        decode_rle("470 20", 24, 20)


def test_relative_rle_hand_made_case():
    expected = np.zeros((24, 20), dtype=np.uint8)
    expected[2:6, 2:4] = 255  # column-major index col * 24 + row: runs 50-53 and, 20 after their end, 74-77
    np.testing.assert_array_equal(decode_rle("50 4 20 4", 24, 20), expected)
    with pytest.raises(ValueError, match="odd number"):
        decode_rle("50 4 20", 24, 20)


def test_siim_stage2_labels_splits_and_masks(tmp_path):
    root = fx.build_siim_stage2(tmp_path / "siim")
    assert not (root / "train-rle.csv").exists()
    table = SIIMSource(mask_dir=tmp_path / "masks").load(root)
    frame = table.frame.set_index("id")
    stage1_test, stage2_test = f"siim_{fx.SIIM_STAGE1_TEST}", f"siim_{fx.SIIM_STAGE2_TEST}"
    assert frame.loc[[NEGATIVE, POSITIVE, stage1_test], "label_pneumothorax"].tolist() == [0, 1, 1]
    assert (frame["split"] == "").all() and stage2_test not in frame.index  # stage 2 labels stage-1 test only
    assert frame.loc[POSITIVE, "study_id"] == "siim_1.2.276.0.7230010.3.1.2.1"
    for record in (POSITIVE, stage1_test):
        np.testing.assert_array_equal(np.asarray(Image.open(frame.loc[record, "mask_pneumothorax"])), fx.siim_mask())
    assert not np.asarray(Image.open(frame.loc[NEGATIVE, "mask_pneumothorax"])).any()


def test_siim_stage2_masks_decode_a_hand_encoded_file(tmp_path):
    root = fx.build_siim_stage2(tmp_path / "siim")
    positive, negative = POSITIVE.removeprefix("siim_"), NEGATIVE.removeprefix("siim_")
    (root / "stage_2_train.csv").write_text(f"ImageId,EncodedPixels\n{negative},-1\n{positive},50 4 20 4\n"
                                            f"{positive},300 3\n{fx.SIIM_STAGE1_TEST},-1\n")
    frame = SIIMSource(mask_dir=tmp_path / "masks").load(root).frame.set_index("id")
    expected = np.zeros((24, 20), dtype=np.uint8)
    expected[2:6, 2:4] = 255  # first row: indices 50-53 (column 2) and 74-77 (column 3), rows 2-5
    expected[12:15, 12] = 255  # second row of the same image: indices 300-302 = column 12, rows 12-14
    np.testing.assert_array_equal(np.asarray(Image.open(frame.loc[POSITIVE, "mask_pneumothorax"])), expected)
    assert frame.loc[f"siim_{fx.SIIM_STAGE1_TEST}", "label_pneumothorax"] == 0
    assert frame.loc[POSITIVE, "label_pneumothorax"] == 1 and frame.loc[NEGATIVE, "label_pneumothorax"] == 0


def test_siim_stage2_is_read_when_both_label_files_are_there(tmp_path):
    root = fx.build_siim_stage2(tmp_path / "siim")
    (root / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{NEGATIVE.removeprefix('siim_')}, -1\n")
    frame = SIIMSource().load(root).frame.set_index("id")
    assert frame["label_pneumothorax"].notna().sum() == 3 and frame.loc[POSITIVE, "label_pneumothorax"] == 1


def test_siim_skips_images_no_label_row_names_with_one_count(tmp_path, caplog):
    root = fx.build_siim_stage2(tmp_path / "siim")
    fx.dicom(root / "dicom-images-train" / "s8" / "r8" / "1.2.276.0.7230010.3.1.4.8.dcm", fx.image(1, (8, 8)))
    with caplog.at_level(logging.INFO, logger="radlab.data.sources.siim"):
        frame = SIIMSource().load(root).frame
    assert len(frame) == 3 and frame["label_pneumothorax"].notna().all()
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [f"siim: 2 unlabelled images skipped (1 in {root / 'stage_2_images'}, the competition's test "
                       f"set; 1 without a row in stage_2_train.csv under {root / 'dicom-images-train'} and "
                       f"{root / 'dicom-images-test'}); the 3 labelled images carry no official split"]


def test_siim_gets_a_labelled_test_split_by_patient(tmp_path):
    table = SIIMSource().load(fx.add_siim_negatives(fx.build_siim(tmp_path / "siim"), 8))
    assert len(table) == 10 and (table.frame["split"] == "").all()
    frame = assign_splits(table, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0).frame
    assert set(frame["split"]) == {"train", "val", "test"} and frame["label_pneumothorax"].notna().all()


def test_siim_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    expected = re.escape(str(tmp_path / "empty")) + " holds neither SIIM-ACR release: .*train-rle.csv.*stage_2_train.csv"
    with pytest.raises(FileNotFoundError, match=expected):
        SIIMSource().load(tmp_path / "empty")
    root = fx.build_siim_stage2(tmp_path / "siim")
    for path in (root / "dicom-images-test").rglob("*.dcm"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match="1 images of stage_2_train.csv are missing under .*dicom-images-test"):
        SIIMSource().load(root)
