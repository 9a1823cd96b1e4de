"""PadChest in its BIMCV release layout.

ROOT holds ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``) and the image folders
``0/ ... 54/`` (the extracted zips; ``ImageDir`` names the folder) of 16-bit PNGs. ``Labels`` is a Python
list literal of 174 lower-case findings, annotated exhaustively (by physicians or their trained model,
``MethodLabel``), so a mapped finding the list lacks is negative; "normal" sets no_finding. Rows whose
``Labels`` is empty are not annotated (all NaN). Age = study year - birth year. The report is preprocessed
Spanish, kept in ``report_es`` rather than ``report`` (the English text column).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import (
    NAN,
    age_years,
    bad_row,
    finish,
    harmonise,
    read_table,
    sex_code,
    view_code,
)

_DEVICES = ("NSG tube", "endotracheal tube", "tracheostomy tube", "central venous catheter",
            "central venous catheter via jugular vein", "central venous catheter via subclavian vein",
            "central venous catheter via umbilical vein", "reservoir central venous catheter", "catheter",
            "pacemaker", "dual chamber device", "single chamber device", "electrical device", "chest drain tube",
            "ventriculoperitoneal drain tube", "gastrostomy tube", "nephrostomy tube", "double J stent",
            "artificial heart valve", "artificial mitral heart valve", "artificial aortic heart valve",
            "aortic endoprosthesis")
LABEL_MAP: dict[str, str] = {
    "normal": "no_finding",
    "cardiomegaly": "cardiomegaly",
    "aortic elongation": "aortic_enlargement", "supra aortic elongation": "aortic_enlargement",
    "descendent aortic elongation": "aortic_enlargement", "ascendent aortic elongation": "aortic_enlargement",
    "aortic button enlargement": "aortic_enlargement", "aortic aneurysm": "aortic_enlargement",
    "mediastinal enlargement": "enlarged_cardiomediastinum",
    "superior mediastinal enlargement": "enlarged_cardiomediastinum",
    "alveolar pattern": "lung_opacity", "increased density": "lung_opacity", "ground glass pattern": "lung_opacity",
    "lung metastasis": "lung_lesion", "lepidic adenocarcinoma": "lung_lesion",
    "nodule": "nodule", "multiple nodules": "nodule",
    "pulmonary mass": "mass", "mass": "mass",
    "cavitation": "lung_cavity",
    "pulmonary edema": "edema",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia", "atypical pneumonia": "pneumonia",
    "atelectasis": "atelectasis", "laminar atelectasis": "atelectasis", "lobar atelectasis": "atelectasis",
    "segmental atelectasis": "atelectasis", "total atelectasis": "atelectasis", "round atelectasis": "atelectasis",
    "atelectasis basal": "atelectasis",
    "infiltrates": "infiltration",
    "interstitial pattern": "interstitial_lung_disease",
    "reticular interstitial pattern": "interstitial_lung_disease",
    "reticulonodular interstitial pattern": "interstitial_lung_disease",
    "pulmonary fibrosis": "fibrosis",
    "tuberculosis": "tuberculosis", "tuberculosis sequelae": "tuberculosis",
    "calcified granuloma": "calcification", "calcified densities": "calcification",
    "emphysema": "emphysema",
    "COPD signs": "copd",
    "pulmonary artery enlargement": "enlarged_pulmonary_artery",
    "mediastinal shift": "mediastinal_shift",
    "pneumothorax": "pneumothorax",
    "pleural effusion": "pleural_effusion", "loculated pleural effusion": "pleural_effusion",
    "loculated fissural effusion": "pleural_effusion",
    "pleural thickening": "pleural_thickening", "apical pleural thickening": "pleural_thickening",
    "calcified pleural thickening": "pleural_thickening",
    "pleural plaques": "pleural_other", "calcified pleural plaques": "pleural_other", "pleural mass": "pleural_other",
    "fracture": "fracture", "rib fracture": "fracture", "callus rib fracture": "fracture",
    "clavicle fracture": "fracture", "humeral fracture": "fracture", "vertebral fracture": "fracture",
    "hiatal hernia": "hernia",
    "scoliosis": "scoliosis",
    **{device: "support_devices" for device in _DEVICES},
}
CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
             "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
COLUMNS = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
           "Projection", "Report", "Labels"]


def parse_labels(value: object, path: Path, row: int) -> list[str] | None:
    """The Labels cell as a list of findings; None when the cell is empty (row not annotated)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None
    try:
        labels = ast.literal_eval(str(value))
    except (ValueError, SyntaxError) as err:
        raise bad_row(path, row, f"Labels={str(value)[:60]!r} is not a list literal ({err})") from err
    if not isinstance(labels, list | tuple):
        raise bad_row(path, row, f"Labels={str(value)[:60]!r} is not a list")
    return [str(label).strip() for label in labels if str(label).strip()]


@SOURCES.register("padchest", "PadChest: labels CSV with 174-finding lists, exhaustive; 16-bit PNG")
class PadChestSource(Source):
    name = "padchest"
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        path = next((root / n for n in CSV_NAMES if (root / n).exists()), root / CSV_NAMES[0])
        frame = read_table(self.require(path), COLUMNS, low_memory=False, dtype={"PatientID": str, "StudyID": str})
        unannotated = harmonise({}, LABEL_MAP)
        records = []
        for row, r in enumerate(frame[COLUMNS].itertuples(index=False)):
            image, folder, date, study, patient, birth, sex, projection, report, cell = r
            labels = parse_labels(cell, path, row)
            if pd.isna(folder) or not str(image).endswith(".png"):
                raise bad_row(path, row, f"ImageID={image!r} / ImageDir={folder!r} do not name a PNG")
            year = int(str(int(date))[:4]) if not pd.isna(date) else None
            records.append({
                "id": f"padchest_{Path(str(image)).stem}", "image_path": f"{int(folder)}/{image}",
                "source": self.name, "patient_id": f"padchest_{patient}", "study_id": f"padchest_{study}",
                "view": view_code(projection), "sex": sex_code(sex),
                "age": age_years(year - birth) if year is not None and not pd.isna(birth) else NAN,
                "report_es": "" if pd.isna(report) else " ".join(str(report).split()),
                **(unannotated if labels is None else harmonise(dict.fromkeys(labels, 1.0), LABEL_MAP, default=0.0)),
            })
        return finish(records, root, str(path))
