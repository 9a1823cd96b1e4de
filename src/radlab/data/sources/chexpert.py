"""CheXpert (v1.0 or v1.0-small) in its release layout.

ROOT is the ``CheXpert-v1.0[-small]`` folder with ``train.csv`` and ``valid.csv``; their ``Path`` column
starts with that folder's name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), which
is stripped so paths resolve against ROOT. Label cells: 1 positive, 0 negative, -1 uncertain (kept), blank
not mentioned (NaN, never negative). Age 0 is CheXpert's code for unknown (NaN). train.csv -> split train,
valid.csv -> val. All views are kept.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
SPLIT_FILES = {"train.csv": "train", "valid.csv": "val"}
TOP_FOLDERS = {"train", "valid", "test"}
UNKNOWN_AGE = 0  # CheXpert's Age for unknown (torchxrayvision reads it as missing too)


def chexpert_view(frontal_lateral: str, ap_pa: object) -> str:
    if str(frontal_lateral) == "Lateral":
        return "LAT"
    return {"AP": "AP", "PA": "PA"}.get(str(ap_pa), "FRONTAL")


@SOURCES.register("chexpert", "CheXpert: train/valid CSVs, uncertain -1 kept, frontal and lateral; JPEG")
class CheXpertSource(Source):
    name = "chexpert"
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        records = []
        for file, split in SPLIT_FILES.items():
            path = self.require(root / file)
            frame = read_table(path, ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_MAP],
                               dtype={"Path": str, "Sex": str, "AP/PA": str})
            for row, r in enumerate(frame.to_dict("records")):
                parts = PurePosixPath(str(r["Path"])).parts
                parts = parts[1:] if parts and parts[0] not in TOP_FOLDERS else parts
                if len(parts) != 4 or not parts[1].startswith("patient") or not parts[2].startswith("study"):
                    raise bad_row(path, row, f"Path {r['Path']!r} is not <split>/patientN/studyN/<view>.jpg")
                if r["Frontal/Lateral"] not in ("Frontal", "Lateral"):
                    raise bad_row(path, row, f"Frontal/Lateral={r['Frontal/Lateral']!r}")
                patient = f"chexpert_{parts[1]}"
                natives = {k: chexpert_value(r[k], path, row, k) for k in LABEL_MAP}
                records.append({
                    "id": f"chexpert_{parts[0]}_{parts[1]}_{parts[2]}_{PurePosixPath(parts[3]).stem}",
                    "image_path": str(PurePosixPath(*parts)), "source": self.name, "patient_id": patient,
                    "study_id": f"{patient}_{parts[2]}", "view": chexpert_view(r["Frontal/Lateral"], r["AP/PA"]),
                    "split": split, "sex": sex_code(r["Sex"]),
                    "age": NAN if r["Age"] == UNKNOWN_AGE else age_years(r["Age"]),
                    **harmonise(natives, LABEL_MAP),
                })
        return finish(records, root, str(root))
