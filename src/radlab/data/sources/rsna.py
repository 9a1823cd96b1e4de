"""RSNA Pneumonia Detection Challenge (Kaggle stage 2) in its release layout.

ROOT holds ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box, or one
row with Target 0), ``stage_2_detailed_class_info.csv`` (patientId, class: "Lung Opacity", "Normal",
"No Lung Opacity / Not Normal") and the DICOMs in ``stage_2_train_images/`` and ``stage_2_test_images/``.
Target (opacity suggestive of pneumonia) -> pneumonia, annotated for every labelled image. Class "Normal" ->
no_finding 1 (0 for the other two classes) and lung_opacity 0; class "Lung Opacity" -> lung_opacity 1; class
"No Lung Opacity / Not Normal" (other abnormalities, some of them opacities that do not suggest pneumonia,
while radlab's lung_opacity is the broad parent of nodule, mass, atelectasis, edema, ...) -> lung_opacity NaN.

``stage_2_test_images/`` is the competition's test set, which no label file names: its images are skipped
(one logged count), as VinDr's Kaggle test images are. The labelled images then form one pool, the
competition's training set rather than a train split of a labelled release, so they carry no official split
(``split`` empty) and ``splits.assign_splits`` draws train, val and test per patient from the fractions: the
source keeps a labelled test split. Sex, age and view come from the DICOM headers; each patientId is one image
of one patient. The images are a subset of NIH ChestX-ray14 re-encoded as DICOM, which ``radlab data audit``
reveals as near duplicates.
"""

from __future__ import annotations

import logging
from pathlib import Path

from radlab.data.dicom import read_header
from radlab.data.records import RecordTable, shown
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    NAN,
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
OPACITY, NORMAL, NOT_NORMAL = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"
CLASSES = (OPACITY, NORMAL, NOT_NORMAL)
# lung_opacity per class: "Not Normal" abnormalities may be opacities other than pneumonia's (not annotated)
OPACITY_BY_CLASS = {OPACITY: 1.0, NORMAL: 0.0, NOT_NORMAL: NAN}
IMAGES, TEST_IMAGES = "stage_2_train_images", "stage_2_test_images"
log = logging.getLogger(__name__)


def natives(target: float, cls: str) -> dict[str, float]:
    """One labelled image's native values: Target, and the class as lung_opacity and no_finding."""
    return {"Target": target, OPACITY: OPACITY_BY_CLASS[cls], NORMAL: float(cls == NORMAL)}


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
                raise bad_row(labels_path, row, f"Target={shown(target)}; expected 0 or 1")
            if pid not in classes or (target == 1) != (classes[pid] == OPACITY):
                raise bad_row(labels_path, row, f"Target={target} disagrees with class "
                                                f"{classes.get(pid, 'missing')!r} in {info_path.name}")
            targets[pid] = float(target)
            if target == 1:
                boxes.setdefault(pid, []).append({"finding": "pneumonia", "native": OPACITY, "x": r["x"],
                                                  "y": r["y"], "w": r["width"], "h": r["height"]})
        folder = self.require(root / IMAGES)
        records = []
        for image in sorted(folder.glob("*.dcm")):
            pid = image.stem
            if pid not in targets:
                raise FileNotFoundError(f"{image}: no row for patientId {pid} in {labels_path.name}")
            header = read_header(image)
            records.append({
                "id": f"rsna_{pid}", "image_path": f"{IMAGES}/{image.name}", "source": self.name,
                "patient_id": f"rsna_{pid}", "study_id": f"rsna_{pid}", "view": view_code(header.view_position),
                "split": "", "sex": sex_code(header.sex), "age": age_years(header.age),
                **harmonise(natives(targets[pid], classes[pid]), LABEL_MAP), "boxes": boxes_json(boxes.get(pid, [])),
            })
        unlabelled = len(list((root / TEST_IMAGES).glob("*.dcm")))
        if unlabelled:
            log.info("rsna_pneumonia: %d unlabelled images in %s (the competition's test set) skipped; the %d labelled "
                     "images carry no official split", unlabelled, root / TEST_IMAGES, len(records))
        missing = set(targets) - {r["id"][len("rsna_"):] for r in records}
        if missing:
            raise FileNotFoundError(f"{len(missing)} labelled images missing from {folder}, "
                                    f"e.g. {sorted(missing)[0]}.dcm")
        return finish(records, root, str(labels_path))

