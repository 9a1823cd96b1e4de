import numpy as np
import pandas as pd
import pytest

from data import fixtures as fx
from radlab.data.images import read_image
from radlab.data.sources.common import SourceFormatError
from radlab.data.sources.padchest import PadChestSource, row_labels


def test_padchest_exhaustive_labels_unannotated_rows_and_16bit_png(tmp_path):
    table = PadChestSource().load(fx.build_padchest(tmp_path))
    frame = table.frame
    normal, sick, unlabelled = (frame.iloc[i] for i in range(3))
    assert normal["label_no_finding"] == 1 and normal["label_pleural_effusion"] == 0
    assert sick["label_pleural_effusion"] == 1  # ' pleural effusion' with the provider's stray space
    assert sick["label_atelectasis"] == 1 and sick["label_fibrosis"] == 1 and sick["label_no_finding"] == 0
    assert sick["label_lung_cyst"] == 0  # exhaustive: a mapped finding the list lacks is negative
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


def _with_extra_rows(root, labels_cells):
    """The fixture plus one row per Labels cell, copied from the fixture's first row (native layout)."""
    path = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = []
    for i, cell in enumerate(labels_cells):
        row = frame.iloc[0].copy()
        row["ImageID"], row["StudyID"], row["Labels"] = f"9990{i}_extra.png", f"x{i}", cell
        fx.png(root / row["ImageDir"] / row["ImageID"], fx.image(60 + i, dtype=np.uint16))
        rows.append(row)
    frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
    frame.rename(columns={"Unnamed: 0": ""}).to_csv(path, index=False)  # the provider's unnamed index column
    return root


def test_padchest_exclude_alone_is_not_annotated_and_counted(tmp_path, caplog):
    # 'exclude' is the authors' report-level "nothing to annotate / do not use" mark, never a negative reading
    root = _with_extra_rows(fx.build_padchest(tmp_path), ["['exclude']"])
    with caplog.at_level("INFO", logger="radlab.data.sources.padchest"):
        table = PadChestSource().load(root)
    assert len(table.frame) == 4  # kept (images and report stay usable), but with no labels
    assert np.isnan(table.labels()[3]).all()
    assert "1 'exclude'" in caplog.text and "2 of 4 rows" in caplog.text  # plus the fixture's NaN row


def test_padchest_suboptimal_study_is_a_quality_remark_not_a_finding(tmp_path):
    root = _with_extra_rows(fx.build_padchest(tmp_path), ["['suboptimal study', 'cardiomegaly']",
                                                          "['suboptimal study']"])
    frame = PadChestSource().load(root).frame
    with_finding, alone = frame.iloc[3], frame.iloc[4]
    assert with_finding["label_cardiomegaly"] == 1 and with_finding["label_enlarged_cardiomediastinum"] == 1
    assert with_finding["label_no_finding"] == 0 and with_finding["label_pleural_effusion"] == 0
    # alone: the list names no finding (negatives stand), but 'normal' is not confirmed either
    assert np.isnan(alone["label_no_finding"])
    assert alone["label_cardiomegaly"] == 0 and alone["label_pleural_effusion"] == 0


def test_padchest_support_devices_alone_are_no_finding(tmp_path):
    # PadChest drops 'normal' beside any other label; the CheXpert rule reads devices-only rows as no finding
    cells = ["['pacemaker']", "['NSG tube', 'central venous catheter']", "['suboptimal study', 'endotracheal tube']",
             "['pacemaker', 'cardiomegaly']", "['chest drain tube', 'chronic changes']"]
    frame = PadChestSource().load(_with_extra_rows(fx.build_padchest(tmp_path), cells)).frame.iloc[3:]
    assert frame["label_support_devices"].tolist() == [1, 1, 1, 1, 1]
    assert frame["label_no_finding"].tolist() == [1, 1, 1, 0, 0]  # any other entry, mapped or not: 0
    assert frame["label_cardiomegaly"].tolist() == [0, 0, 0, 1, 0]
    assert (frame["label_pleural_effusion"] == 0).all()


@pytest.mark.parametrize("device", ["dai", "pacemaker", "endoprosthesis", "aortic endoprosthesis"])
def test_padchest_implanted_devices_are_support_devices(device):
    """'dai' (implantable defibrillator) sits beside pacemaker under 'electrical device' in the authors' tree;
    'endoprosthesis' is the parent of 'aortic endoprosthesis'."""
    alone, beside = row_labels([device]), row_labels([device, "cardiomegaly"])
    assert alone["label_support_devices"] == 1 and alone["label_no_finding"] == 1
    assert beside["label_support_devices"] == 1 and beside["label_no_finding"] == 0


def test_padchest_empty_label_list_is_not_annotated(tmp_path):
    table = PadChestSource().load(_with_extra_rows(fx.build_padchest(tmp_path), ["[]"]))
    assert np.isnan(table.labels()[3]).all()


@pytest.mark.parametrize(("entry", "positive"), [
    ("hydropneumothorax", {"pneumothorax", "pleural_effusion"}),
    ("empyema", {"pleural_effusion"}), ("hemothorax", {"pleural_effusion"}),
    ("air bronchogram", {"consolidation", "lung_opacity"}),
    ("miliary opacities", {"interstitial_lung_disease", "lung_opacity"}),
    ("cyst", {"lung_cyst", "lung_lesion", "lung_opacity"}),
    ("vertebral compression", {"fracture"}), ("vertebral anterior compression", {"fracture"}),
    ("bullas", set()), ("subcutaneous emphysema", set()),
])
def test_padchest_entries_map_as_the_authors_label_tree_places_them(entry, positive):
    """An entry is its nearest ancestor in the authors' trees that radlab names; one radlab does not name is
    no finding of radlab's (every mapped finding negative), never a positive elsewhere."""
    values = row_labels([entry])
    found = {name.removeprefix("label_") for name, v in values.items() if v == 1}
    assert found == positive
    assert values["label_no_finding"] == 0


def test_padchest_costophrenic_blunting_makes_effusion_uncertain_unless_named():
    """Blunting suggests a small effusion without naming one: uncertain, not negative; beside "pleural
    effusion" the named finding stands."""
    alone = row_labels(["costophrenic angle blunting"])
    assert alone["label_pleural_effusion"] == -1 and alone["label_no_finding"] == 0
    assert alone["label_pneumothorax"] == 0
    assert row_labels(["costophrenic angle blunting", "pleural effusion"])["label_pleural_effusion"] == 1
