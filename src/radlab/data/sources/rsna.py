"""RSNA Pneumonia Detection Challenge (Kaggle stage 2) in its release layout.

ROOT holds ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box, or one
row with Target 0), ``stage_2_detailed_class_info.csv`` (patientId, class: "Lung Opacity", "Normal",
"No Lung Opacity / Not Normal") and the DICOMs in ``stage_2_train_images/`` and ``stage_2_test_images/``.
Target (opacity suggestive of pneumonia) -> pneumonia; class "Lung Opacity" -> lung_opacity; class
"Normal" -> no_finding; each is annotated for every training image. Test images carry no labels.
Sex, age and view come from the DICOM headers; each patientId is one image of one patient. The images are
a subset of NIH ChestX-ray14 re-encoded as DICOM, which ``radlab data audit`` reveals as near duplicates.
"""

from __future__ import annotations

from pathlib import Path

from radlab.data.dicom import read_header
from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    age_years,
    bad_row,
    boxes_json,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

LABEL_MAP: dict[str, str] = {
    "Target": "pneumonia",
    "Lung Opacity": "lung_opacity",
    "Normal": "no_finding",
}
CLASSES = ("Lung Opacity", "Normal", "No Lung Opacity / Not Normal")
FOLDERS = {"stage_2_train_images": "train", "stage_2_test_images": "test"}


@SOURCES.register("rsna_pneumonia", "RSNA Pneumonia: DICOM, Target + detailed class info, boxes")
class RSNAPneumoniaSource(Source):
    name = "rsna_pneumonia"
    markers = ("stage_2_train_labels.csv",)
    image_origin = "nih"
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        labels_path, info_path = root / "stage_2_train_labels.csv", root / "stage_2_detailed_class_info.csv"
        labels = read_table(self.require(labels_path), ["patientId", "x", "y", "width", "height", "Target"])
        info = read_table(self.require(info_path), ["patientId", "class"])
        classes: dict[str, str] = {}
        for row, (pid, cls) in enumerate(info[["patientId", "class"]].itertuples(index=False)):
            if cls not in CLASSES:
                raise bad_row(info_path, row, f"class={cls!r}; expected one of {CLASSES}")
            classes[pid] = cls
        targets: dict[str, float] = {}
        boxes: dict[str, list[dict]] = {}
        for row, r in enumerate(labels.to_dict("records")):
            pid, target = r["patientId"], r["Target"]
            if target not in (0, 1):
                raise bad_row(labels_path, row, f"Target={target!r}; expected 0 or 1")
            if pid not in classes or (target == 1) != (classes[pid] == "Lung Opacity"):
                raise bad_row(labels_path, row, f"Target={target} disagrees with class "
                                                f"{classes.get(pid, 'missing')!r} in {info_path.name}")
            targets[pid] = float(target)
            if target == 1:
                boxes.setdefault(pid, []).append({"finding": "pneumonia", "native": "Lung Opacity", "x": r["x"],
                                                  "y": r["y"], "w": r["width"], "h": r["height"]})
        records = []
        for folder, split in FOLDERS.items():
            if split == "train":
                self.require(root / folder)
            for image in sorted((root / folder).glob("*.dcm")) if (root / folder).is_dir() else []:
                pid = image.stem
                if split == "train" and pid not in targets:
                    raise FileNotFoundError(f"{image}: no row for patientId {pid} in {labels_path.name}")
                header = read_header(image)
                natives = {}
                if split == "train":
                    natives = {"Target": targets[pid], **{c: float(classes[pid] == c) for c in CLASSES}}
                records.append({
                    "id": f"rsna_{pid}", "image_path": f"{folder}/{image.name}", "source": self.name,
                    "patient_id": f"rsna_{pid}", "study_id": f"rsna_{pid}", "view": view_code(header.view_position),
                    "split": split, "sex": sex_code(header.sex), "age": age_years(header.age),
                    **harmonise(natives, LABEL_MAP),
                    "boxes": boxes_json(boxes.get(pid, [])) if split == "train" else "",
                })
        missing = set(targets) - {r["id"][len("rsna_"):] for r in records}
        if missing:
            raise FileNotFoundError(f"{len(missing)} labelled images missing from {root / 'stage_2_train_images'}, "
                                    f"e.g. {sorted(missing)[0]}.dcm")
        return finish(records, root, str(labels_path))

