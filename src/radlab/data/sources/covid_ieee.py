"""The COVID-19 image data collection (ieee8023/covid-chestxray-dataset) in its repository layout.

ROOT holds ``metadata.csv`` and the ``images/`` folder (``folder`` + ``filename`` columns). Only X-ray rows
are kept (``modality`` X-ray; the CT slices of ``volumes/`` are another modality). ``finding`` is a
diagnosis path such as "Pneumonia/Viral/COVID-19" or "No Finding": one diagnosis per image, so pneumonia,
tuberculosis and no_finding are each 1 when on the path and 0 otherwise; "todo" (not yet diagnosed)
leaves them NaN. The pathogen below "Pneumonia/" has no canonical finding and stays in ``diagnosis``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import age_years, bad_row, finish, harmonise, read_table, sex_code, view_code

LABEL_MAP: dict[str, str] = {
    "Pneumonia": "pneumonia",
    "Tuberculosis": "tuberculosis",
    "Mycobacterium": "tuberculosis",
    "No Finding": "no_finding",
}
UNDIAGNOSED = {"todo", "unknown", ""}  # no diagnosis: every finding stays unannotated
COLUMNS = ["patientid", "offset", "sex", "age", "finding", "view", "modality", "folder", "filename"]


@SOURCES.register("covid_ieee", "COVID-19 image data collection: metadata.csv diagnosis paths; X-ray only")
class CovidIEEESource(Source):
    name = "covid_ieee"
    markers = ("metadata.csv",)
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        path = self.require(root / "metadata.csv")
        frame = read_table(path, COLUMNS, dtype={"patientid": str, "filename": str, "folder": str})
        records = []
        for row, r in enumerate(frame[COLUMNS].to_dict("records")):
            if str(r["modality"]).strip() != "X-ray":
                continue
            if pd.isna(r["filename"]) or pd.isna(r["folder"]) or pd.isna(r["patientid"]):
                raise bad_row(path, row, "patientid, folder and filename are required")
            finding = "" if pd.isna(r["finding"]) else str(r["finding"]).strip()
            parts = [p.strip() for p in finding.split("/") if p.strip()]
            natives = {} if finding.lower() in UNDIAGNOSED else {p: 1.0 for p in parts}
            offset = "" if pd.isna(r["offset"]) else f"_{int(float(r['offset']))}"
            records.append({
                "id": f"covid_{Path(r['filename']).stem}", "image_path": f"{r['folder']}/{r['filename']}",
                "source": self.name, "patient_id": f"covid_{r['patientid']}",
                "study_id": f"covid_{r['patientid']}{offset}", "view": view_code(r["view"]),
                "sex": sex_code(r["sex"]), "age": age_years(r["age"]), "diagnosis": finding,
                **harmonise(natives, LABEL_MAP, default=0.0 if natives else float("nan")),
            })
        return finish(records, root, str(path))
