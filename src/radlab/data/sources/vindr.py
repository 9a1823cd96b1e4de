"""VinDr-CXR in its PhysioNet v1.0.0 layout or in the Kaggle competition layout, told apart by their files.

PhysioNet v1.0.0: ROOT holds ``train/<image_id>.dicom``, ``test/<image_id>.dicom`` and ``annotations/``:
``image_labels_train.csv`` (one row per image and radiologist, ``rad_id``, 28 global and local labels as 0/1),
``image_labels_test.csv`` (one consensus row per image) and optionally ``annotations_{train,test}.csv``
(boxes). Each reader's row is harmonised on its own (labels are exhaustive: unlisted = 0).

Kaggle ("VinBigData Chest X-ray Abnormalities Detection"): ROOT holds ``train.csv`` with one row per box and
radiologist (``image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max``; rad_id R8, R10, ...; the 14
local classes have ids 0-13, "No finding" is id 14 with empty boxes), ``train/<image_id>.dicom``, unlabelled
``test/<image_id>.dicom`` and ``sample_submission.csv`` (not read). The layout was learned from the train.csv
sample in tariqshaban/yolov7-vinbigdata-chest-x-ray (README.md) and the class ids in
grapestone5321/Kaggle-Prj-VinBigData_Chest_X-ray_Abnormalities_Detection (README.md). Each reader marks all 14
classes exhaustively, so for that reader a class with any of its boxes is 1 and every other class 0; a reader's
"No finding" row (none of the 14 classes) gives no_finding 1, any box no_finding 0. Findings only the PhysioNet
labels express (fractures, edema, pneumonia, tuberculosis, COPD, ...) stay NaN. The test images carry no labels
and, as in the PhysioNet layout where only labelled images are loaded, are skipped (counted in the log). The
images train.csv labels are then the competition's whole labelled pool, not a train split of a labelled release:
they carry no official split (``split`` empty), so ``splits.assign_splits`` draws train, val and test per
patient from the fractions and the source keeps a labelled test split.

Both layouts: readers vote per finding: more than half positive -> 1, none -> 0, a positive minority -> -1
(readers disagree). Per-reader positives are kept in ``reader_labels`` (JSON), boxes in ``boxes``. Sex and age
come from the DICOM headers; there is one image per de-identified patient, so patient ids are image ids.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from radlab.data.dicom import read_header
from radlab.data.records import RecordTable, shown
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

log = logging.getLogger(__name__)

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
PHYSIONET_LABELS = Path("annotations") / "image_labels_train.csv"

KAGGLE_LABELS = "train.csv"
KAGGLE_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
NO_FINDING = "No finding"
KAGGLE_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                  "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", NO_FINDING)  # position = class_id
KAGGLE_MAP: dict[str, str] = {c: LABEL_MAP[c] for c in KAGGLE_CLASSES if c not in UNMAPPED}


def vote(values: list[float]) -> float:
    """Readers' 0/1 values for one finding -> 1 (majority), 0 (none), -1 (positive minority). A reader's NaN
    (a parent finding only a positive child sets, e.g. pleural_other from pleural thickening) counts as not
    positive, so the parent follows its child's vote; NaN only when no reader states the finding."""
    if all(pd.isna(v) for v in values):
        return NAN
    share = sum(v == POSITIVE for v in values) / len(values)
    return POSITIVE if share > 0.5 else NEGATIVE if share == 0 else UNCERTAIN


def consensus(per_reader: list[dict[str, float]]) -> dict[str, float]:
    """Each reader's harmonised labels -> one voted value per label column."""
    return {col: vote([p[col] for p in per_reader]) for col in per_reader[0]}


def boxes_by_image(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """Box rows -> image id -> boxes (canonical finding, native class, x, y, w, h, reader); rows without a box
    ("No finding") are dropped."""
    reader = "rad_id" if "rad_id" in frame else None
    boxes: dict[str, list[dict]] = {}
    for r in frame.dropna(subset=["x_min"]).to_dict("records"):
        box = {"finding": LABEL_MAP.get(r["class_name"], ""), "native": r["class_name"], "x": r["x_min"],
               "y": r["y_min"], "w": r["x_max"] - r["x_min"], "h": r["y_max"] - r["y_min"]}
        boxes.setdefault(r["image_id"], []).append({**box, **({"reader": r[reader]} if reader else {})})
    return boxes


def read_box_file(path: Path) -> dict[str, list[dict]] | None:
    """image id -> boxes from a PhysioNet box file; None without the file."""
    if not path.exists():
        return None
    return boxes_by_image(read_table(path, ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]))


def layout(root: Path) -> str:
    """'physionet' or 'kaggle', by the files in ROOT; a clear error naming both layouts when neither is there."""
    if (root / PHYSIONET_LABELS).exists():
        return "physionet"
    kaggle = root / KAGGLE_LABELS
    if kaggle.exists() and {"class_name", "rad_id"} <= set(read_table(kaggle, [], nrows=0).columns):
        return "kaggle"
    raise FileNotFoundError(
        f"{root} holds neither VinDr-CXR layout: PhysioNet v1.0.0 needs {PHYSIONET_LABELS} (with train/ and test/ "
        f"DICOMs); the Kaggle VinBigData competition layout needs {KAGGLE_LABELS} with class_name and rad_id "
        f"columns (with train/<image_id>.dicom)")


def kaggle_readers(frame: pd.DataFrame, path: Path) -> dict[str, dict[str, set[str]]]:
    """train.csv rows -> image id -> reader -> the classes that reader marked (names, ids and readers checked)."""
    readers: dict[str, dict[str, set[str]]] = {}
    for row, (image_id, name, class_id, reader) in enumerate(
            frame[["image_id", "class_name", "class_id", "rad_id"]].itertuples(index=False)):
        if name not in KAGGLE_CLASSES or class_id != KAGGLE_CLASSES.index(name):
            raise bad_row(path, row, f"class {name!r} with class_id {class_id!r}; expected the competition's "
                                     f"classes {dict(enumerate(KAGGLE_CLASSES))}")
        if pd.isna(reader) or not str(reader).strip():
            raise bad_row(path, row, "empty rad_id")
        marked = readers.setdefault(str(image_id), {}).setdefault(str(reader), set())
        marked.add(name)
        if NO_FINDING in marked and len(marked) > 1:
            raise bad_row(path, row, f"reader {reader} marks both {NO_FINDING!r} and findings on image {image_id}")
    return readers


@SOURCES.register("vindr", "VinDr-CXR (PhysioNet or Kaggle layout): DICOM, per-radiologist labels voted into "
                           "1/0/-1, boxes")
class VinDrSource(Source):
    name = "vindr"
    label_map = LABEL_MAP

    @classmethod
    def recognises(cls, root: Path) -> bool:
        """Either VinDr layout (the Kaggle one by its train.csv's columns, not the file name alone); another
        provider's or an unreadable train.csv is not VinDr's."""
        try:
            layout(Path(root))
        except (FileNotFoundError, ValueError):
            return False
        return True

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        return self.load_physionet(root) if layout(root) == "physionet" else self.load_kaggle(root)

    def load_physionet(self, root: Path) -> RecordTable:
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
                    raise bad_row(path, row, f"{bad[0]}={shown(r[bad[0]])}; expected 0 or 1")
            for image_id, group in frame.groupby("image_id", sort=True):
                readers = group.to_dict("records")
                per_reader = [harmonise({c: float(r[c]) for c in natives}, LABEL_MAP, default=0.0) for r in readers]
                marks = {str(r.get("rad_id", "consensus")): sorted(c for c in natives if r[c] == 1) for r in readers}
                records.append(self.record(root, split, str(image_id), consensus(per_reader), marks,
                                           "" if boxes is None else boxes_json(boxes.get(image_id, []))))
        return finish(records, root, str(root))

    def load_kaggle(self, root: Path) -> RecordTable:
        path = root / KAGGLE_LABELS
        frame = read_table(path, KAGGLE_COLUMNS, dtype={"image_id": str, "rad_id": str})
        readers, boxes = kaggle_readers(frame, path), boxes_by_image(frame)
        records = []
        for image_id in sorted(readers):
            marks = readers[image_id]
            per_reader = [harmonise(dict.fromkeys(m, POSITIVE), KAGGLE_MAP, default=NEGATIVE) for m in marks.values()]
            records.append(self.record(root, "train", image_id, consensus(per_reader),
                                       {r: sorted(m) for r, m in marks.items()}, boxes_json(boxes.get(image_id, [])),
                                       split=""))
        unlabelled = len(list((root / "test").glob("*.dicom")))
        if unlabelled:
            log.info("vindr: %d unlabelled images in %s (Kaggle test set) skipped; the %d labelled images carry no "
                     "official split", unlabelled, root / "test", len(records))
        return finish(records, root, str(path))

    def record(self, root: Path, folder: str, image_id: str, labels: dict[str, float],
               reader_labels: dict[str, list[str]], boxes: str, split: str | None = None) -> dict:
        """One image's record from ``folder`` (also its split unless ``split`` is given); sex, age and view from
        its DICOM header."""
        header = read_header(self.require(root / folder / f"{image_id}.dicom"))
        return {
            "id": f"vindr_{image_id}", "image_path": f"{folder}/{image_id}.dicom", "source": self.name,
            "patient_id": f"vindr_{image_id}", "study_id": f"vindr_{image_id}",
            "view": view_code(header.view_position), "split": folder if split is None else split,
            "sex": sex_code(header.sex),
            "age": age_years(header.age), **labels, "reader_labels": json.dumps(reader_labels), "boxes": boxes,
        }
