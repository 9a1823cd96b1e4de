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
    assert table.mask_path(0, "lungs").exists() and table.mask_path(1, "lungs") is None
