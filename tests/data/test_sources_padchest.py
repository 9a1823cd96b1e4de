import numpy as np
import pytest

from data import fixtures as fx
from radlab.data.images import read_image
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.padchest import PadChestSource


def test_padchest_exhaustive_labels_unannotated_rows_and_16bit_png(tmp_path):
    table = PadChestSource().load(fx.build_padchest(tmp_path))
    frame = table.frame
    normal, sick, unlabelled = (frame.iloc[i] for i in range(3))
    assert normal["label_no_finding"] == 1 and normal["label_pleural_effusion"] == 0
    assert sick["label_pleural_effusion"] == 1  # ' pleural effusion' with the provider's stray space
    assert sick["label_atelectasis"] == 1 and sick["label_fibrosis"] == 1 and sick["label_no_finding"] == 0
    assert np.isnan(sick["label_lung_cyst"])  # PadChest's map has no lung cyst
    assert np.isnan(table.labels()[2]).all()  # empty Labels: not annotated
    assert (sick["view"], sick["sex"], sick["age"]) == ("LAT", "M", 86.0)
    assert (unlabelled["view"], unlabelled["sex"]) == ("AP", "")
    assert sick["report"] == "" and sick["report_es"].startswith("cambi pulmonar")
    pixels = read_image(table.image_path(1))
    assert pixels.min() == 0 and pixels.max() == 1 and len(np.unique(pixels)) > 256  # 16-bit depth kept


def test_padchest_broken_label_list_is_named(tmp_path):
    root = fx.build_padchest(tmp_path)
    path = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    path.write_text(path.read_text().replace("['normal']", "['normal'"))
    with pytest.raises(SourceFormatError, match=r"data row 1: Labels=.*is not a list literal"):
        PadChestSource().load(root)
