"""RecordDataset and Collator: study numbers group a study's images (they share its report)."""

from __future__ import annotations

from pathlib import Path

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
