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
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
from radlab.data.reports import full_report, parse_sections
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.chexpert import LABEL_MAP as CHEXPERT_LABEL_MAP
from radlab.data.sources.chexpert import labeler_natives
from radlab.data.sources.common import (
    NAN,
    SourceFormatError,
    age_years,
    bad_row,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

LABEL_MAP: dict[str, str] = CHEXPERT_LABEL_MAP  # same 14 observations, same column names
PREFIX = "mimic-cxr-2.0.0-"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
LABELERS = ("chexpert", "negbio")
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


@SOURCES.register("mimic_cxr", "MIMIC-CXR-JPG: files tree, split/metadata/chexpert CSVs, reports zip, MIMIC-IV ages")
class MIMICCXRSource(Source):
    name = "mimic_cxr"
    markers = (f"{PREFIX}split.csv.gz",)
    label_map = LABEL_MAP

    def __init__(self, labeler: str = "chexpert", patients: str | None = None) -> None:
        if labeler not in LABELERS:
            raise ValueError(f"labeler must be one of {LABELERS}, got {labeler!r}")
        self.labeler = labeler
        self.patients = Path(patients) if patients else None

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
        records = []
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
                **study_labels.get(int(study), unlabelled),
            })
        return finish(records, root, str(meta_path))
