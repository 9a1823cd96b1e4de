import numpy as np
import pytest
from PIL import Image

from data import fixtures as fx
from radlab.data.sources.siim import SIIMSource, decode_rle

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
    test_rows = frame[frame["split"] == "test"]
    assert len(test_rows) == 1 and test_rows["mask_pneumothorax"].iat[0] == ""


def test_siim_without_mask_dir_has_labels_only(tmp_path):
    frame = SIIMSource().load(fx.build_siim(tmp_path)).frame
    assert "mask_pneumothorax" not in frame and frame["label_pneumothorax"].notna().sum() == 2


def test_relative_rle_round_trip_and_errors():
    mask = fx.siim_mask()
    np.testing.assert_array_equal(decode_rle(fx.relative_rle(mask), 24, 20), mask)
    with pytest.raises(ValueError, match="leaves the 24x20 image"):
        decode_rle("470 20", 24, 20)
