"""NIH ChestX-ray14 in its release layout.

ROOT holds ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``), the official
``train_val_list.txt`` / ``test_list.txt`` and optionally ``BBox_List_2017.csv``; PNGs lie in ``images/`` or
in the ``images_001/images/ ... images_012/images/`` folders of the split download. The 14 labels were
text-mined for every image, so a label an image does not list is negative (0); "No Finding" sets no_finding.
Official lists map to split train (train_val_list) and test. Boxes go to the ``boxes`` column as JSON in
original pixel units.

Kaggle's random sample of 5,606 images is read too: ``sample_labels.csv`` (the same columns, ages as '060Y')
with its PNGs in ``images/`` or ``sample/images/``. It ships no official split, so patient-level splits are drawn.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    SourceFormatError,
    age_years,
    bad_row,
    boxes_json,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

log = logging.getLogger(__name__)

LABEL_MAP: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia",
    "No Finding": "no_finding",
}
BOX_LABEL_MAP: dict[str, str] = {**LABEL_MAP, "Infiltrate": "infiltration"}  # BBox_List spells it so
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "sample_labels.csv")
SPLIT_FILES = {"train_val_list.txt": "train", "test_list.txt": "test"}


def image_index(root: Path) -> dict[str, str]:
    """PNG file name -> path relative to ROOT, over ``images/``, ``images_*/images/`` and ``sample/images/``."""
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*")) + [root / "sample" / "images"]
    index: dict[str, str] = {}
    for folder in folders:
        if folder.is_dir():
            for entry in os.scandir(folder):
                index.setdefault(entry.name, str(Path(folder.relative_to(root)) / entry.name))
    return index


def read_boxes(path: Path) -> dict[str, list[dict]]:
    """BBox_List_2017.csv -> image name -> boxes (canonical finding, native label, x, y, w, h)."""
    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["Image Index", "Finding Label"] or frame.shape[1] < 6:
        raise SourceFormatError(f"{path}: expected columns 'Image Index, Finding Label, Bbox [x,y,w,h]'")
    boxes: dict[str, list[dict]] = {}
    for row, values in enumerate(frame.iloc[:, :6].itertuples(index=False)):
        name, label, x, y, w, h = values
        if label not in BOX_LABEL_MAP:
            raise bad_row(path, row, f"unknown finding label {label!r}")
        boxes.setdefault(name, []).append({"finding": BOX_LABEL_MAP[label], "native": label, "x": x, "y": y,
                                           "w": w, "h": h})
    return boxes


@SOURCES.register("nih", "NIH ChestX-ray14: Data_Entry CSV, official train/test lists, boxes; PNG")
class NIHSource(Source):
    name = "nih"
    markers = ENTRY_FILES
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        entry = next((root / f for f in ENTRY_FILES if (root / f).exists()), root / ENTRY_FILES[0])
        frame = read_table(self.require(entry), ["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                                                 "Patient Age", "View Position"])
        sex_column = "Patient Gender" if "Patient Gender" in frame else "Patient Sex"
        if sex_column not in frame:
            raise SourceFormatError(f"{entry}: missing column 'Patient Gender' (or 'Patient Sex')")
        splits = {name: split for file, split in SPLIT_FILES.items() if (root / file).exists()
                  for name in (root / file).read_text().split()}
        boxes = read_boxes(root / "BBox_List_2017.csv") if (root / "BBox_List_2017.csv").exists() else {}
        index = image_index(root)
        columns = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "View Position",
                   sex_column]
        records, missing = [], 0
        for row, (name, findings, follow_up, patient_id, age, view, sex) in enumerate(
                frame[columns].itertuples(index=False)):
            if not isinstance(findings, str) or not findings.strip():
                raise bad_row(entry, row, "empty 'Finding Labels'")
            natives = [f.strip() for f in findings.split("|")]
            unknown = [f for f in natives if f not in LABEL_MAP]
            if unknown:
                raise bad_row(entry, row, f"unknown finding label(s) {unknown}")
            if not str(patient_id).isdigit() or not str(follow_up).isdigit():
                raise bad_row(entry, row, f"Patient ID {patient_id!r} / Follow-up # {follow_up!r} is not a number")
            missing += name not in index
            patient = f"nih_{int(patient_id):05d}"
            records.append({
                "id": f"nih_{Path(name).stem}", "image_path": index.get(name, f"images/{name}"),
                "source": self.name, "patient_id": patient, "study_id": f"{patient}_{int(follow_up):03d}",
                "view": view_code(view), "split": splits.get(name, ""), "sex": sex_code(sex), "age": age_years(age),
                **harmonise({f: 1.0 for f in natives}, LABEL_MAP, default=0.0),
                "boxes": boxes_json(boxes[name]) if name in boxes else "",
            })
        if missing:
            log.warning("nih: %d of %d images not found under %s; kept with their expected paths",
                        missing, len(records), root)
        return finish(records, root, str(entry))
