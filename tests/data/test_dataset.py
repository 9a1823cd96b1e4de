"""RecordDataset and Collator: study numbers group a study's images (they share its report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from data import fixtures as fx
from radlab.data.dataset import Collator, RecordDataset, ReportDataset, study_reports
from radlab.data.records import RecordTable
from radlab.models.towers import Preprocess


def test_images_of_one_study_share_its_number_and_records_without_one_stand_alone(tmp_path: Path) -> None:
    table = fx.image_table(tmp_path)
    frame = table.frame.copy()
    frame["study_id"] = ["s1", "s1", "s2", "", "s2", "", "s1"] + [f"x{i}" for i in range(len(frame) - 7)]
    frame["patient_id"] = ["a", "a", "b", "c", "b", "d", "e"] + [f"p{i}" for i in range(len(frame) - 7)]
    table = RecordTable(frame, table.root)
    batch = Collator()([RecordDataset(table, Preprocess(image_size=16))[i] for i in range(7)])
    study = batch["study"].tolist()
    assert study[0] == study[1] and study[2] == study[4] and len({study[0], study[2], study[3], study[5]}) == 4
    assert study[6] != study[0]  # study ids need only be unique within a patient
    reports = study_reports(table)
    assert len(reports) == len(table) - 2
    texts = Collator()([ReportDataset(reports)[i] for i in range(3)])
    assert texts["study"].tolist() == texts["index"].tolist() == [0, 1, 2]


def _stripes(root: Path) -> RecordTable:
    """One 256 px film of vertical stripes 4 px wide (period 8), fine detail a 64 px read averages away."""
    column = np.where(np.arange(256) % 8 < 4, 200, 40).astype(np.uint8)
    fx.png(root / "stripes.png", np.tile(column, (256, 1)))
    return RecordTable.from_records([{"id": "s0", "image_path": "stripes.png", "source": "s", "patient_id": "p0"}],
                                    root)


def test_views_cut_from_a_larger_read_keep_source_detail(tmp_path: Path) -> None:
    """A zoomed crop (a quarter of the side, as DINOv2 zooms its local views) cut from a 256 px read keeps the
    stripes; cut from the 64 px read the tower takes, it is upsampled blur. Without a transform a larger read
    is brought to the tower's size."""
    table, preprocess = _stripes(tmp_path), Preprocess(image_size=64, mean=0.0, std=1.0)
    zoom = v2.RandomResizedCrop(64, scale=(1 / 16, 1 / 16), ratio=(1.0, 1.0), antialias=True)
    contrast = {}
    for source_size in (None, 256):
        torch.manual_seed(0)
        view = RecordDataset(table, preprocess, transform=zoom, source_size=source_size)[0]["image"]
        assert view.shape == (1, 64, 64)
        contrast[source_size] = float(view.std())
    assert contrast[256] > 0.25 > 0.1 > contrast[None], contrast
    plain = RecordDataset(table, preprocess, source_size=256)[0]["image"]
    assert plain.shape == (1, 64, 64)
    assert torch.allclose(plain, RecordDataset(table, preprocess)[0]["image"], atol=0.05)
    with pytest.raises(ValueError, match="source_size .32. is smaller than the tower's image size .64."):
        RecordDataset(table, preprocess, source_size=32)


def test_a_larger_read_keeps_a_cropping_towers_geometry(tmp_path: Path) -> None:
    """A tower that resizes to 80 and centre-crops 64 is read at 160 -> 128 for a 128 px source: the same field
    of view, twice the pixels."""
    fx.png(tmp_path / "wide.png", fx.blobs(3, 96)[:, :72])
    table = RecordTable.from_records([{"id": "w", "image_path": "wide.png", "source": "s", "patient_id": "p"}],
                                     tmp_path)
    preprocess = Preprocess(image_size=64, mean=0.0, std=1.0, fit="crop", resize=80)
    dataset = RecordDataset(table, preprocess, source_size=128)
    assert dataset.load_image(0).shape == (1, 128, 128)
    assert torch.allclose(dataset[0]["image"], RecordDataset(table, preprocess)[0]["image"], atol=0.06)
