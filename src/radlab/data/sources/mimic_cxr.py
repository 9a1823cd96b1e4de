"""MIMIC-CXR-JPG (v2.0 / v2.1) in its PhysioNet layout, with the MIMIC-CXR reports archive.

ROOT holds ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`` and ``mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}
.csv.gz``; reports come from ``mimic-cxr-reports.zip`` or its extracted ``mimic-cxr-reports/`` folder in ROOT,
or, for studies those lack, from the reports as MIMIC-CXR's own tree holds them, ``files/pXX/pSUBJECT/sSTUDY.txt``
beside the study folders (the zip extracted into ROOT); a warning names where it looked when no study has one.
Sex and age come from MIMIC-IV's ``patients.csv.gz`` when ROOT (or ``patients=``) has it: age at the
study is anchor_age + (study year - anchor_year), in MIMIC's shifted calendar; NaN when anchor_age is the
top code 91 (over 89). Labels are per study, from the CheXpert labeler file (``labeler="negbio"`` picks the
NegBio file); blank = not mentioned (NaN), -1 = uncertain, except "No Finding": both labelers write it as 1 or
leave it blank, so blank beside a positive or uncertain finding is 0 (``chexpert.labeler_natives``). The
official split maps train/validate/test to train/val/test. All views are kept.

Version 2.1.0 adds ``mimic-cxr-2.1.0-test-set-labeled.csv`` in ROOT: 15 columns, ``study_id`` and the 14
observations as a board-certified radiologist labelled them by hand from the reports of 687 test-set studies
(the reference PhysioNet's labeler evaluation used); "Lung Opacity" is headed "Airspace Opacity" there, the
observation's earlier name in the CheXpert labeler. Cells mean what the labelers' cells mean (1 positive, 0
negative, -1 uncertain, blank not mentioned) and are read cell by cell, "No Finding" included (the labelers'
blank-No-Finding rule is theirs, not the radiologist's). Policy (``test_labels=``):
- ``radiologist`` (default): a study of the official test split listed in the file takes the radiologist's 14
  labels in place of the labeler's (all 14, never cell by cell); other test studies keep the labeler's.
- ``radiologist_only``: as above, and test studies the file does not list are left unannotated (NaN), so the
  test split's reference standard is the radiologist's alone (the file is then required).
- ``labeler``: the file is not read.
Listed studies of the train/validate splits keep the labeler's labels and listed studies without images in the
metadata are skipped, each with a logged count, as is the number of test studies each way. Splits are untouched:
labels follow studies, and the splits stay the official patient-level ones.
Layout from the PhysioNet MIMIC-CXR-JPG 2.1.0 page (15 columns, ``study_id`` first, blank/1.0/0.0/-1.0) and
the CheXpert labeler's category names ("Airspace Opacity"); not yet checked against the file itself.
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable, shown
from radlab.data.reports import full_report, parse_sections
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.chexpert import LABEL_MAP as CHEXPERT_LABEL_MAP
from radlab.data.sources.chexpert import labeler_natives
from radlab.data.sources.common import (
    NAN,
    SourceFormatError,
    age_years,
    bad_row,
    chexpert_value,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

LABEL_MAP: dict[str, str] = CHEXPERT_LABEL_MAP  # same 14 observations, same column names
# mimic-cxr-2.1.0-test-set-labeled.csv: the same 14, "Lung Opacity" under its earlier name.
TEST_LABEL_MAP: dict[str, str] = {("Airspace Opacity" if k == "Lung Opacity" else k): v for k, v in LABEL_MAP.items()}
PREFIX = "mimic-cxr-2.0.0-"
TEST_LABELS_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
LABELERS = ("chexpert", "negbio")
TEST_LABEL_POLICIES = ("radiologist", "radiologist_only", "labeler")  # module docstring
TOP_CODED_AGE = 91  # MIMIC-IV top-codes anchor_age: every patient over 89 gets 91, so the real age is unknown
REPORTS_ZIP, REPORTS_FOLDER = "mimic-cxr-reports.zip", "mimic-cxr-reports"
REPORT_PLACES = f"{REPORTS_ZIP}, {REPORTS_FOLDER}/ and files/pXX/pSUBJECT/sSTUDY.txt"
log = logging.getLogger(__name__)


def read_reports(root: Path, studies: dict[int, int]) -> dict[int, str]:
    """study id -> report text, from the zip archive or its extracted folder (files named sSTUDY.txt); studies
    they lack (``studies``: study id -> subject id) are looked up in ROOT's tree, files/pXX/pSUBJECT/sSTUDY.txt."""
    archive, folder = root / REPORTS_ZIP, root / REPORTS_FOLDER
    reports: dict[int, str] = {}
    if archive.exists():
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                stem = Path(name).stem
                if name.endswith(".txt") and stem[:1] == "s" and stem[1:].isdigit():
                    reports[int(stem[1:])] = zf.read(name).decode("utf-8", errors="replace")
    elif folder.is_dir():
        for path in folder.rglob("s*.txt"):
            if path.stem[1:].isdigit():
                reports[int(path.stem[1:])] = path.read_text(errors="replace")
    for study in studies.keys() - reports.keys():
        subject = studies[study]
        path = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}.txt"
        if path.is_file():
            reports[study] = path.read_text(errors="replace")
    return reports


def read_patients(path: Path | None) -> dict[int, tuple[str, float, float]]:
    """subject_id -> (sex, anchor_age, anchor_year) from MIMIC-IV patients.csv(.gz); a top-coded age is NaN."""
    if path is None or not path.exists():
        return {}
    frame = read_table(path, ["subject_id", "gender", "anchor_age", "anchor_year"])
    return {int(s): (sex_code(g), float(a) if a < TOP_CODED_AGE else NAN, float(y)) for s, g, a, y in
            frame[["subject_id", "gender", "anchor_age", "anchor_year"]].itertuples(index=False)}


def read_test_labels(path: Path) -> dict[int, dict[str, float]]:
    """study id -> harmonised labels from the radiologist-labelled test-set file, read cell by cell."""
    frame = read_table(path, ["study_id", *TEST_LABEL_MAP], dtype={"study_id": str})
    labels: dict[int, dict[str, float]] = {}
    for row, r in enumerate(frame.to_dict("records")):
        study = str(r["study_id"]).strip()
        if not study.isdigit():
            raise bad_row(path, row, f"study_id={shown(r['study_id'])} is not a MIMIC study number")
        if int(study) in labels:
            raise bad_row(path, row, f"study_id {study} is listed twice")
        natives = {k: chexpert_value(r[k], path, row, k) for k in TEST_LABEL_MAP}
        labels[int(study)] = harmonise(natives, TEST_LABEL_MAP)
    return labels


@SOURCES.register("mimic_cxr", "MIMIC-CXR-JPG: files tree, split/metadata/chexpert CSVs (radiologist test-set labels "
                               "when present), reports zip, MIMIC-IV ages")
class MIMICCXRSource(Source):
    name = "mimic_cxr"
    markers = (f"{PREFIX}split.csv.gz",)
    label_map = LABEL_MAP

    def __init__(self, labeler: str = "chexpert", patients: str | None = None,
                 test_labels: str = "radiologist") -> None:
        if labeler not in LABELERS:
            raise ValueError(f"labeler must be one of {LABELERS}, got {labeler!r}")
        if test_labels not in TEST_LABEL_POLICIES:
            raise ValueError(f"test_labels must be one of {TEST_LABEL_POLICIES}, got {test_labels!r}")
        self.labeler = labeler
        self.patients = Path(patients) if patients else None
        self.test_labels = test_labels

    def _radiologist_labels(self, root: Path) -> dict[int, dict[str, float]] | None:
        """The test-set file's labels under this source's policy; None when the file is not read."""
        path = root / TEST_LABELS_FILE
        if self.test_labels == "radiologist_only":
            self.require(path)
        return read_test_labels(path) if self.test_labels != "labeler" and path.exists() else None

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        split_path, meta_path = root / f"{PREFIX}split.csv.gz", root / f"{PREFIX}metadata.csv.gz"
        label_path = root / f"{PREFIX}{self.labeler}.csv.gz"
        split = read_table(self.require(split_path), ["dicom_id", "study_id", "subject_id", "split"])
        meta = read_table(self.require(meta_path), ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"])
        labels = read_table(self.require(label_path), ["subject_id", "study_id", *LABEL_MAP])
        study_labels = {}
        for row, r in enumerate(labels.to_dict("records")):
            study_labels[int(r["study_id"])] = harmonise(labeler_natives(r, label_path, row), LABEL_MAP)
        splits = dict(zip(split["dicom_id"], split["split"], strict=True))
        studies = dict(zip(meta["study_id"].astype(int), meta["subject_id"].astype(int), strict=True))
        reports = read_reports(root, studies)
        if studies and not reports.keys() & studies.keys():
            log.warning("mimic_cxr: none of %d studies has a report: looked for %s in %s; findings, impression and "
                        "report stay empty", len(studies), REPORT_PLACES, root)
        default_patients = next((root / n for n in ("patients.csv.gz", "patients.csv") if (root / n).exists()), None)
        patients = read_patients(self.patients or default_patients)
        unlabelled = harmonise({}, LABEL_MAP)
        radiologist = self._radiologist_labels(root)
        records, test_studies = [], set()
        for row, r in enumerate(meta[["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"]]
                                .itertuples(index=False)):
            dicom_id, subject, study, view, date = r
            if dicom_id not in splits:
                raise bad_row(meta_path, row, f"dicom_id {dicom_id!r} is not in {split_path.name}")
            if splits[dicom_id] not in SPLITS:
                raise SourceFormatError(f"{split_path}: unknown split {splits[dicom_id]!r} for {dicom_id}")
            sex, anchor_age, anchor_year = patients.get(int(subject), ("", NAN, NAN))
            year = int(str(int(date))[:4]) if not pd.isna(date) else None
            age = anchor_age + (year - anchor_year) if year is not None and not math.isnan(anchor_age) else NAN
            found = study_labels.get(int(study), unlabelled)
            if radiologist is not None and SPLITS[splits[dicom_id]] == "test":
                test_studies.add(int(study))
                found = radiologist.get(int(study), unlabelled if self.test_labels == "radiologist_only" else found)
            text = reports.get(int(study), "")
            sections = parse_sections(text)
            findings, impression = sections.get("findings", ""), sections.get("impression", "")
            records.append({
                "id": f"mimic_{dicom_id}",
                "image_path": f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom_id}.jpg",
                "source": self.name, "patient_id": f"mimic_{subject}", "study_id": f"mimic_s{study}",
                "view": view_code(view), "split": SPLITS[splits[dicom_id]], "sex": sex, "age": age_years(age),
                "findings": findings, "impression": impression,
                "report": full_report(findings, impression) or " ".join(text.split()),
                **found,
            })
        if radiologist is not None:
            self._log_test_labels(radiologist, test_studies, studies, meta_path.name)
        return finish(records, root, str(meta_path))

    def _log_test_labels(self, radiologist: dict[int, dict[str, float]], test_studies: set[int], studies: dict[int, int],
                         metadata: str) -> None:
        """Counts: test studies with radiologist labels, the others, and listed studies not used."""
        rest = "left unannotated" if self.test_labels == "radiologist_only" else f"kept with the {self.labeler} labels"
        used = len(test_studies & radiologist.keys())
        log.info("mimic_cxr: %d of %d test-split studies take the radiologist labels of %s; the other %d are %s",
                 used, len(test_studies), TEST_LABELS_FILE, len(test_studies) - used, rest)
        outside = radiologist.keys() - test_studies
        if outside:
            other = len(outside & studies.keys())
            log.info("mimic_cxr: %d of %d studies in %s are not test-split studies of %s (%d in train/validate, kept "
                     "with the %s labels; %d without images); their radiologist labels are not used", len(outside),
                     len(radiologist), TEST_LABELS_FILE, metadata, other, self.labeler, len(outside) - other)
