"""PadChest in its BIMCV release layout.

ROOT holds ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``) and the image folders
``0/ ... 54/`` (the extracted zips; ``ImageDir`` names the folder) of 16-bit PNGs. ``Labels`` is a Python
list literal of 174 lower-case findings, annotated exhaustively (by physicians or their trained model,
``MethodLabel``), so a mapped finding the list lacks is negative; "normal" sets no_finding. The authors'
aggregation drops "normal" from every report with another label, so a list of support devices only
(``DEVICES``, with or without "suboptimal study") gives no_finding 1, as the CheXpert rule radlab uses
elsewhere does (no finding but support devices); any other entry gives no_finding 0. Rows whose
``Labels`` is empty (blank or ``[]``) are not annotated (all NaN). Age = study year - birth year. The report is
preprocessed Spanish, kept in ``report_es`` rather than ``report`` (the English text column).

``LABEL_MAP`` follows the authors' label trees (below): an entry maps as the nearest ancestor radlab names, since
the exhaustive lists carry the most specific label only (hydropneumothorax, empyema and hemothorax sit under
pleural effusion, hydropneumothorax under pneumothorax too (``ALSO``); air bronchogram under consolidation;
miliary opacities under the interstitial pattern; "cyst" is the tree's "cyst of lung"; vertebral compression is
UMLS C0262431, a compression fracture). "infiltrates" stays radlab's infiltration alone: the tree's children
(interstitial and alveolar patterns, consolidation) are radlab's siblings of it under lung opacity. One entry
suggests a finding without naming it (``UNCERTAIN_ENTRIES``): "costophrenic angle blunting" (UMLS C0742855, a top-level
entry beside "pleural effusion") is a small effusion or pleural scarring, so it makes pleural effusion uncertain
(-1) rather than negative, as IU X-ray's blunted costophrenic angle does. The generic "mass" (the tree's
"mass of thoracic structure", listed when the report names no site) counts as a lung mass, as an IU "Mass"
without a site does; its sited children other than "pulmonary mass" (mediastinal, breast, pleural, soft tissue)
are not lung masses.

Two entries are not findings (``MARKERS``). Their meaning comes from the dataset authors' label trees and
report-level aggregation (github.com/auriml/Rx-thorax-automatic-captioning: manual_review/trees_code.txt,
util.py ``unique_labels``, README "Search Instructions"; Bustos et al., Med. Image Anal. 2020): "exclude" is a
single-label tree, dropped from any report with other labels, and in ``Labels`` it means the report gives
nothing to annotate and the image should be excluded, so such rows are kept but not annotated (all NaN,
counted in the log). "suboptimal study" (UMLS C2828075, suboptimal image reason) is a quality remark beside
the findings: the other entries are read as usual; alone, no finding is listed (negatives stand) but
no_finding is NaN, because the aggregation drops "normal" from every report with another label.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable, label_column
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

log = logging.getLogger(__name__)

# -> support_devices; a list of these alone (no other finding) -> no_finding 1, the CheXpert rule. The authors'
# tree puts "dai" (implantable cardioverter-defibrillator) beside pacemaker under "electrical device", and
# "aortic endoprosthesis" under "endoprosthesis" (a vascular stent graft), so both parents and children are here.
DEVICES = ("NSG tube", "endotracheal tube", "tracheostomy tube", "central venous catheter",
           "central venous catheter via jugular vein", "central venous catheter via subclavian vein",
           "central venous catheter via umbilical vein", "reservoir central venous catheter", "catheter",
           "pacemaker", "dai", "dual chamber device", "single chamber device", "electrical device",
           "chest drain tube", "ventriculoperitoneal drain tube", "gastrostomy tube", "nephrostomy tube",
           "double J stent", "artificial heart valve", "artificial mitral heart valve",
           "artificial aortic heart valve", "endoprosthesis", "aortic endoprosthesis")
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
    "cavitation": "lung_cavity", "cyst": "lung_cyst",
    "pulmonary edema": "edema",
    "consolidation": "consolidation", "air bronchogram": "consolidation",
    "pneumonia": "pneumonia", "atypical pneumonia": "pneumonia",
    "atelectasis": "atelectasis", "laminar atelectasis": "atelectasis", "lobar atelectasis": "atelectasis",
    "segmental atelectasis": "atelectasis", "total atelectasis": "atelectasis", "round atelectasis": "atelectasis",
    "atelectasis basal": "atelectasis",
    "infiltrates": "infiltration",
    "interstitial pattern": "interstitial_lung_disease",
    "reticular interstitial pattern": "interstitial_lung_disease",
    "reticulonodular interstitial pattern": "interstitial_lung_disease",
    "miliary opacities": "interstitial_lung_disease",
    "pulmonary fibrosis": "fibrosis",
    "tuberculosis": "tuberculosis", "tuberculosis sequelae": "tuberculosis",
    "calcified granuloma": "calcification", "calcified densities": "calcification",
    "emphysema": "emphysema",
    "COPD signs": "copd",
    "pulmonary artery enlargement": "enlarged_pulmonary_artery",
    "mediastinal shift": "mediastinal_shift",
    "pneumothorax": "pneumothorax", "hydropneumothorax": "pneumothorax",
    "pleural effusion": "pleural_effusion", "loculated pleural effusion": "pleural_effusion",
    "costophrenic angle blunting": "pleural_effusion",
    "loculated fissural effusion": "pleural_effusion", "empyema": "pleural_effusion",
    "hemothorax": "pleural_effusion",
    "pleural thickening": "pleural_thickening", "apical pleural thickening": "pleural_thickening",
    "calcified pleural thickening": "pleural_thickening",
    "pleural plaques": "pleural_other", "calcified pleural plaques": "pleural_other", "pleural mass": "pleural_other",
    "fracture": "fracture", "rib fracture": "fracture", "callus rib fracture": "fracture",
    "clavicle fracture": "fracture", "humeral fracture": "fracture", "vertebral fracture": "fracture",
    "vertebral compression": "fracture", "vertebral anterior compression": "fracture",
    "hiatal hernia": "hernia",
    "scoliosis": "scoliosis",
    **{device: "support_devices" for device in DEVICES},
}
# Entries that suggest their finding without naming it: uncertain (-1) unless another entry names it.
UNCERTAIN_ENTRIES = ("costophrenic angle blunting",)
# Entries that also name a second finding: the authors' tree puts hydropneumothorax under pneumothorax and under
# pleural effusion.
ALSO: dict[str, str] = {"hydropneumothorax": "pleural effusion"}
EXCLUDE, SUBOPTIMAL = "exclude", "suboptimal study"
# Labels entries that are remarks, not findings (module docstring: what they mean and where that comes from).
MARKERS: dict[str, str] = {
    EXCLUDE: "alone: row not annotated (all labels NaN, counted in the log); beside findings: ignored",
    SUBOPTIMAL: "ignored beside findings (devices only: no_finding 1); alone: findings negative, no_finding NaN "
                "(normal not confirmed)",
}
CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
             "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
COLUMNS = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
           "Projection", "Report", "Labels"]


def parse_labels(value: object, path: Path, row: int) -> list[str] | None:
    """The Labels cell as a list of entries; None when the cell or the list is empty (row not annotated)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None
    try:
        labels = ast.literal_eval(str(value))
    except (ValueError, SyntaxError) as err:
        raise bad_row(path, row, f"Labels={str(value)[:60]!r} is not a list literal ({err})") from err
    if not isinstance(labels, list | tuple):
        raise bad_row(path, row, f"Labels={str(value)[:60]!r} is not a list")
    return [str(label).strip() for label in labels if str(label).strip()] or None


def row_labels(labels: list[str] | None) -> dict[str, float] | None:
    """One row's harmonised labels; None when the row is not annotated (empty list, or "exclude" alone).

    Support devices alone give no_finding 1 (the CheXpert rule; PadChest drops "normal" beside them)."""
    findings = [label for label in labels or [] if label not in MARKERS]
    if not findings and SUBOPTIMAL not in (labels or []):
        return None
    named = findings + [ALSO[label] for label in findings if label in ALSO]
    values = harmonise({label: -1.0 if label in UNCERTAIN_ENTRIES else 1.0 for label in named}, LABEL_MAP, default=0.0)
    if not findings:  # "suboptimal study" alone: no finding listed, but "normal" may have been dropped
        values[label_column("no_finding")] = NAN
    elif all(label in DEVICES for label in findings):
        values[label_column("no_finding")] = 1.0
    return values


@SOURCES.register("padchest", "PadChest: labels CSV with 174-finding lists, exhaustive; 16-bit PNG")
class PadChestSource(Source):
    name = "padchest"
    markers = CSV_NAMES
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        path = next((root / n for n in CSV_NAMES if (root / n).exists()), root / CSV_NAMES[0])
        frame = read_table(self.require(path), COLUMNS, low_memory=False, dtype={"PatientID": str, "StudyID": str})
        unannotated = harmonise({}, LABEL_MAP)
        records, excluded, empty = [], 0, 0
        for row, r in enumerate(frame[COLUMNS].itertuples(index=False)):
            image, folder, date, study, patient, birth, sex, projection, report, cell = r
            labels = parse_labels(cell, path, row)
            values = row_labels(labels)
            excluded += values is None and labels is not None
            empty += labels is None
            if pd.isna(folder) or not str(image).endswith(".png"):
                raise bad_row(path, row, f"ImageID={image!r} / ImageDir={folder!r} do not name a PNG")
            year = int(str(int(date))[:4]) if not pd.isna(date) else None
            records.append({
                "id": f"padchest_{Path(str(image)).stem}", "image_path": f"{int(folder)}/{image}",
                "source": self.name, "patient_id": f"padchest_{patient}", "study_id": f"padchest_{study}",
                "view": view_code(projection), "sex": sex_code(sex),
                "age": age_years(year - birth) if year is not None and not pd.isna(birth) else NAN,
                "report_es": "" if pd.isna(report) else " ".join(str(report).split()),
                **(unannotated if values is None else values),
            })
        if excluded or empty:
            log.info("padchest: %d of %d rows not annotated (%d 'exclude', %d empty Labels); kept with all labels NaN",
                     excluded + empty, len(records), excluded, empty)
        return finish(records, root, str(path))
