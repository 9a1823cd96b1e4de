"""VinDr-CXR (PhysioNet v1.0.0) in its release layout.

ROOT holds ``train/<image_id>.dicom``, ``test/<image_id>.dicom`` and ``annotations/``: ``image_labels_train.csv``
(one row per image and radiologist, ``rad_id``, 28 global and local labels as 0/1),
``image_labels_test.csv`` (one consensus row per image) and optionally ``annotations_{train,test}.csv``
(boxes). Each reader's row is harmonised on its own (labels are exhaustive: unlisted = 0); readers then
vote per finding: more than half positive -> 1, none -> 0, a positive minority -> -1 (readers disagree).
Per-reader positives are kept in ``reader_labels`` (JSON), boxes in ``boxes``. Sex and age come from the
DICOM headers; there is one image per de-identified patient, so patient ids are image ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from radlab.data.dicom import read_header
from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    NAN,
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
from radlab.data.taxonomy import NEGATIVE, POSITIVE, UNCERTAIN

LABEL_MAP: dict[str, str] = {
    "Aortic enlargement": "aortic_enlargement",
    "Atelectasis": "atelectasis",
    "Calcification": "calcification",
    "Cardiomegaly": "cardiomegaly",
    "Clavicle fracture": "fracture",
    "Rib fracture": "fracture",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Enlarged PA": "enlarged_pulmonary_artery",
    "ILD": "interstitial_lung_disease",
    "Infiltration": "infiltration",
    "Lung Opacity": "lung_opacity",
    "Lung cavity": "lung_cavity",
    "Lung cyst": "lung_cyst",
    "Mediastinal shift": "mediastinal_shift",
    "Nodule/Mass": "lung_lesion",
    "Lung tumor": "lung_lesion",
    "Pleural effusion": "pleural_effusion",
    "Pleural thickening": "pleural_thickening",
    "Pneumothorax": "pneumothorax",
    "Pulmonary fibrosis": "fibrosis",
    "COPD": "copd",
    "Pneumonia": "pneumonia",
    "Tuberculosis": "tuberculosis",
    "No finding": "no_finding",
}
UNMAPPED = ("Other lesion", "Other diseases", "Other disease")  # no canonical finding; kept in reader_labels
SPLITS = ("train", "test")


def vote(values: list[float]) -> float:
    """Readers' 0/1 values for one finding -> 1 (majority), 0 (none), -1 (positive minority)."""
    known = [v for v in values if not pd.isna(v)]
    if not known:
        return NAN
    share = sum(v == POSITIVE for v in known) / len(known)
    return POSITIVE if share > 0.5 else NEGATIVE if share == 0 else UNCERTAIN


def read_box_file(path: Path) -> dict[str, list[dict]] | None:
    """image id -> boxes (canonical finding, native class, x, y, w, h, reader); None without the file."""
    if not path.exists():
        return None
    frame = read_table(path, ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"])
    reader = "rad_id" if "rad_id" in frame else None
    boxes: dict[str, list[dict]] = {}
    for r in frame.dropna(subset=["x_min"]).to_dict("records"):
        box = {"finding": LABEL_MAP.get(r["class_name"], ""), "native": r["class_name"], "x": r["x_min"],
               "y": r["y_min"], "w": r["x_max"] - r["x_min"], "h": r["y_max"] - r["y_min"]}
        boxes.setdefault(r["image_id"], []).append({**box, **({"reader": r[reader]} if reader else {})})
    return boxes


@SOURCES.register("vindr", "VinDr-CXR: DICOM, per-radiologist labels voted into 1/0/-1, boxes")
class VinDrSource(Source):
    name = "vindr"
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        records = []
        for split in SPLITS:
            path = self.require(root / "annotations" / f"image_labels_{split}.csv")
            frame = read_table(path, ["image_id"]).rename(columns=lambda c: "rad_id" if c.lower() == "rad_id" else c)
            unknown = set(frame.columns) - set(LABEL_MAP) - set(UNMAPPED) - {"image_id", "rad_id"}
            if unknown:
                raise SourceFormatError(f"{path}: unknown label column(s) {sorted(unknown)}")
            boxes = read_box_file(root / "annotations" / f"annotations_{split}.csv")
            natives = [c for c in frame.columns if c not in ("image_id", "rad_id")]
            for row, r in enumerate(frame.to_dict("records")):
                bad = [c for c in natives if r[c] not in (0, 1)]
                if bad:
                    raise bad_row(path, row, f"{bad[0]}={r[bad[0]]!r}; expected 0 or 1")
            for image_id, group in frame.groupby("image_id", sort=True):
                readers = group.to_dict("records")
                per_reader = [harmonise({c: float(r[c]) for c in natives}, LABEL_MAP, default=0.0) for r in readers]
                labels = {col: vote([p[col] for p in per_reader]) for col in per_reader[0]}
                image = self.require(root / split / f"{image_id}.dicom")
                header = read_header(image)
                records.append({
                    "id": f"vindr_{image_id}", "image_path": f"{split}/{image_id}.dicom", "source": self.name,
                    "patient_id": f"vindr_{image_id}", "study_id": f"vindr_{image_id}",
                    "view": view_code(header.view_position), "split": split, "sex": sex_code(header.sex),
                    "age": age_years(header.age),
                    **labels,
                    "reader_labels": json.dumps({str(r.get("rad_id", "consensus")): sorted(
                        c for c in natives if r[c] == 1) for r in readers}),
                    "boxes": "" if boxes is None else boxes_json(boxes.get(image_id, [])),
                })
        return finish(records, root, str(root))

