"""CheXpert (v1.0 or v1.0-small) in its release layout, and its radiologist-labelled test set.

ROOT is the ``CheXpert-v1.0[-small]`` folder with ``train.csv`` and ``valid.csv``; their ``Path`` column
starts with that folder's name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), which
is stripped so paths resolve against ROOT. Label cells: 1 positive, 0 negative, -1 uncertain (kept), blank
not mentioned (NaN, never negative). Age 0 is CheXpert's code for unknown (NaN). train.csv -> split train,
valid.csv -> val. All views are kept.

"No Finding" in train.csv (and in MIMIC-CXR-JPG's chexpert/negbio files, made by the same labelers) is not a
mention: the CheXpert labeler writes it as 1 when no observation but Support Devices is positive or uncertain,
and leaves it blank otherwise, never 0. So a blank "No Finding" beside a positive or uncertain finding (other
than Support Devices) is read as 0 (``labeler_natives``); blank beside none (a row the rule would have marked
1) stays NaN, as nothing can be inferred from it. valid.csv is labelled by radiologists with explicit 0s and
is read cell by cell.

The test set (500 studies of 500 patients, 668 images) ships with CheXlocalize (Stanford AIMI) as
``CheXpert/test_labels.csv`` beside ``CheXpert/test/patientN/studyN/viewK_{frontal,lateral}.jpg`` -> split test,
in the same ROOT as train/valid or alone (ROOT is then that ``CheXpert`` folder). Its ``Path``
(``test/patient64741/study1/view1_frontal.jpg``) is relative to that folder and prefix-stripped like
train/valid; the other columns are the 14 observations, 1 or 0 only (the 5-radiologist majority vote; -1 or
blank is an error). It has no Sex, Age, Frontal/Lateral or AP/PA columns: sex and age stay unknown and the view
(FRONTAL or LAT) comes from the file name.

Layout learned from rajpurkarlab/cheXpert-test-set-labels (README.md; groundtruth.csv, the consensus per study
with a ``Study`` column ``CheXpert-v1.0/test/patient64741/study1`` and no image paths, not read here),
rajpurkarlab/CheXzero README.md (``CheXpert/test/patient64741/study1/view1_frontal.jpg``),
carloalbertobarbano/medclip-zeroshot-chexpert data/chexpert.py (``Path`` joined to the folder holding
``test_labels.csv``), Achan40/multimodal-class-acv data/README.md (no Age/Sex in the test set) and
MI2DataLab/be-careful-evaluating-explanations README.md (0/1 counts per class over the 668 images).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    NAN,
    age_years,
    bad_row,
    chexpert_value,
    finish,
    harmonise,
    read_table,
    sex_code,
)
from radlab.data.taxonomy import NEGATIVE, POSITIVE, UNCERTAIN

# The 14 CheXpert observations (also used by MIMIC-CXR-JPG's chexpert/negbio files).
LABEL_MAP: dict[str, str] = {
    "No Finding": "no_finding",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Lung Lesion": "lung_lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Fracture": "fracture",
    "Support Devices": "support_devices",
}
TEST_FILE = "test_labels.csv"
SPLIT_FILES = {"train.csv": "train", "valid.csv": "val", TEST_FILE: "test"}
RELEASE_FILES = ("train.csv", "valid.csv")  # shipped together: one without the other is an incomplete copy
TOP_FOLDERS = {"train", "valid", "test"}
UNKNOWN_AGE = 0  # CheXpert's Age for unknown (torchxrayvision reads it as missing too)
NO_FINDING, DEVICES = "No Finding", "Support Devices"
LABELLED_FILES = ("train.csv",)  # written by the CheXpert labeler: "No Finding" is 1 or blank (module docstring)


def natives_as_written(r: dict[str, Any], path: Path, row: int) -> dict[str, float]:
    """A row's 14 observation cells, each read by ``chexpert_value``."""
    return {k: chexpert_value(r[k], path, row, k) for k in LABEL_MAP}


def labeler_natives(r: dict[str, Any], path: Path, row: int) -> dict[str, float]:
    """A labeler row's 14 cells; a blank "No Finding" is 0 when another observation (not Support Devices) is
    positive or uncertain, as the labeler leaves it blank exactly then."""
    natives = natives_as_written(r, path, row)
    abnormal = any(v in (POSITIVE, UNCERTAIN) for k, v in natives.items() if k not in (NO_FINDING, DEVICES))
    if math.isnan(natives[NO_FINDING]) and abnormal:
        natives[NO_FINDING] = NEGATIVE
    return natives


def chexpert_view(frontal_lateral: str, ap_pa: object) -> str:
    if str(frontal_lateral) == "Lateral":
        return "LAT"
    return {"AP": "AP", "PA": "PA"}.get(str(ap_pa), "FRONTAL")


def split_files(root: Path) -> dict[Path, str]:
    """The label files present in ROOT and their splits; train.csv and valid.csv are required as a pair."""
    present = [name for name in SPLIT_FILES if (root / name).exists()]
    if not present:
        raise FileNotFoundError(f"{root} holds none of {', '.join(SPLIT_FILES)}: expected CheXpert's train.csv and "
                                f"valid.csv and/or the test set's {TEST_FILE} (in the CheXlocalize release, ROOT "
                                f"is its CheXpert folder)")
    if set(present) & set(RELEASE_FILES):
        for name in RELEASE_FILES:
            Source.require(root / name)
    return {root / name: SPLIT_FILES[name] for name in present}


def image_parts(path: Path, row: int, value: object) -> tuple[str, ...]:
    """``Path`` as (split folder, patient, study, file), the release folder prefix stripped."""
    parts = PurePosixPath(str(value)).parts
    parts = parts[1:] if parts and parts[0] not in TOP_FOLDERS else parts
    if len(parts) != 4 or not parts[1].startswith("patient") or not parts[2].startswith("study"):
        raise bad_row(path, row, f"Path {value!r} is not <split>/patientN/studyN/<view>.jpg")
    return parts


def consensus_value(value: Any, path: Path, row: int, column: str) -> float:
    """A test-set cell: the radiologists' consensus is 1 or 0, never uncertain or blank."""
    number = chexpert_value(value, path, row, column)
    if number not in (POSITIVE, NEGATIVE):
        shown = "blank" if math.isnan(number) else repr(value)
        raise bad_row(path, row, f"{column}={shown}; the test set's consensus labels are 1 or 0")
    return number


def release_fields(path: Path, row: int, r: dict[str, Any]) -> dict[str, Any]:
    """View, sex, age and native labels of a train.csv/valid.csv row."""
    if r["Frontal/Lateral"] not in ("Frontal", "Lateral"):
        raise bad_row(path, row, f"Frontal/Lateral={r['Frontal/Lateral']!r}")
    natives = (labeler_natives if path.name in LABELLED_FILES else natives_as_written)(r, path, row)
    return {"view": chexpert_view(r["Frontal/Lateral"], r["AP/PA"]), "sex": sex_code(r["Sex"]),
            "age": NAN if r["Age"] == UNKNOWN_AGE else age_years(r["Age"]), "natives": natives}


def consensus_fields(path: Path, row: int, r: dict[str, Any], file: str) -> dict[str, Any]:
    """View (from the file name), unknown sex and age, and consensus labels of a test_labels.csv row."""
    stem = PurePosixPath(file).stem
    if not stem.endswith(("_frontal", "_lateral")):
        raise bad_row(path, row, f"Path {r['Path']!r}: file name is not viewN_frontal or viewN_lateral")
    return {"view": "LAT" if stem.endswith("_lateral") else "FRONTAL", "sex": "", "age": NAN,
            "natives": {k: consensus_value(r[k], path, row, k) for k in LABEL_MAP}}


@SOURCES.register("chexpert", "CheXpert: train/valid CSVs (uncertain -1 kept) and the test set's consensus "
                              "test_labels.csv; frontal and lateral; JPEG")
class CheXpertSource(Source):
    name = "chexpert"
    markers = ("valid.csv", TEST_FILE)
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        records = []
        for path, split in split_files(root).items():
            records += self._records(path, split)
        return finish(records, root, str(root))

    def _records(self, path: Path, split: str) -> list[dict[str, Any]]:
        test = split == "test"
        columns = ["Path", *LABEL_MAP] if test else ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_MAP]
        frame = read_table(path, columns, dtype={"Path": str, "Sex": str, "AP/PA": str})
        records = []
        for row, r in enumerate(frame.to_dict("records")):
            parts = image_parts(path, row, r["Path"])
            fields = consensus_fields(path, row, r, parts[3]) if test else release_fields(path, row, r)
            patient = f"chexpert_{parts[1]}"
            records.append({
                "id": f"chexpert_{parts[0]}_{parts[1]}_{parts[2]}_{PurePosixPath(parts[3]).stem}",
                "image_path": str(PurePosixPath(*parts)), "source": self.name, "patient_id": patient,
                "study_id": f"{patient}_{parts[2]}", "view": fields["view"], "split": split, "sex": fields["sex"],
                "age": fields["age"], **harmonise(fields["natives"], LABEL_MAP),
            })
        return records
