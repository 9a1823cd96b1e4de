"""IU X-ray (Indiana University / OpenI) in its two-CSV form: indiana_reports.csv + indiana_projections.csv.

MeSH tags are expert-coded for every indexed report, so a finding without a tag is read as negative (0), and
the "normal" tag sets no_finding, as do tags of devices alone (devices are no finding, as in CheXpert and
PadChest); any other tag, mapped or not (scarring, spine degeneration), makes it 0. A report that was not indexed (no terms, or only "No Indexing" /
"Technical Quality of Image Unsatisfactory") is unlabelled: every finding NaN. A "borderline" qualifier such
as ``Cardiomegaly/borderline`` is read as uncertain (-1), and so are tags that suggest a finding without
naming it (``UNCERTAIN_MAP``: ``Costophrenic Angle/blunted`` for effusion). A head may name two findings
(``SECOND_FINDING``: hydropneumothorax), a round opacity or density is a nodule, and an opacity, density,
nodule or mass sited outside the lungs
(``NON_LUNG_SITES``: breast, heart, mitral valve, ...) names none; nor does calcinosis of the aorta, vessels or a
valve (``VASCULAR_SITES``): vascular calcification is not the taxonomy's calcification (a calcified granuloma or
focus), as Atherosclerosis/aorta, the experts' other tag for it, is not. Images, when present, are expected at
``images/images_normalized/<filename>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radlab.data.records import RecordTable, label_column
from radlab.data.reports import full_report
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import NAN
from radlab.data.taxonomy import (
    FINDING_NAMES,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    ancestors,
    propagate_to_parents,
)

MESH_MAP: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Opacity": "lung_opacity",
    "Density": "lung_opacity",
    "Airspace Disease": "lung_opacity",
    "Pulmonary Atelectasis": "atelectasis",
    "Calcified Granuloma": "calcification",
    "Calcinosis": "calcification",
    "Pleural Effusion": "pleural_effusion",
    "Catheters, Indwelling": "support_devices",
    "Surgical Instruments": "support_devices",
    "Implanted Medical Device": "support_devices",
    "Tube, Inserted": "support_devices",
    "Medical Device": "support_devices",
    "Stents": "support_devices",
    "Scoliosis": "scoliosis",
    "Nodule": "nodule",
    "Mass": "mass",
    "Fractures, Bone": "fracture",
    "Pulmonary Congestion": "edema",
    "Pulmonary Edema": "edema",
    "Infiltrate": "infiltration",
    "Emphysema": "emphysema",
    "Pulmonary Emphysema": "emphysema",
    "Hernia, Hiatal": "hernia",
    "Pneumonia": "pneumonia",
    "Consolidation": "consolidation",
    "Pneumothorax": "pneumothorax",
    "Pulmonary Fibrosis": "fibrosis",
    "Lung Diseases, Interstitial": "interstitial_lung_disease",
    "Tuberculosis": "tuberculosis",
    "Hydropneumothorax": "pneumothorax",
    "Hemopneumothorax": "pneumothorax",
    "Hemothorax": "pleural_effusion",
    "Bullous Emphysema": "emphysema",
    "Aortic Aneurysm": "aortic_enlargement",
    "Hernia, Diaphragmatic": "hernia",
    "Fibrosis": "fibrosis",
}
# Heads that name a second finding too: air and fluid (or blood) in the pleural space.
SECOND_FINDING: dict[str, str] = {"Hydropneumothorax": "pleural_effusion", "Hemopneumothorax": "pleural_effusion"}
# Opacity, density, nodule or mass sited outside the lungs (a breast implant, a valve, a vertebra) names no lung
# finding; ribs, hila and the mediastinum stay mapped (a lung nodule often projects over a rib).
LUNG_SITED = {"Opacity", "Density", "Nodule", "Mass"}
NON_LUNG_SITES = {"breast", "heart", "mitral valve", "adipose tissue", "sternum", "clavicle", "thoracic vertebrae"}
# Calcinosis of the aorta or another vessel or valve (not of a lymph node beside one, "Calcinosis/aorta/lymph nodes")
VASCULAR_SITES = {"aorta", "aorta, thoracic", "blood vessels", "coronary vessels", "pulmonary artery", "mitral valve"}
QUALIFIED_MAP: dict[tuple[str, str], str] = {
    ("Thickening", "pleura"): "pleural_thickening",
    ("Aorta", "tortuous"): "aortic_enlargement",
    ("Aorta", "enlarged"): "aortic_enlargement",
    ("Aorta, Thoracic", "tortuous"): "aortic_enlargement",
    ("Aorta, Thoracic", "enlarged"): "aortic_enlargement",
    ("Cardiac Shadow", "enlarged"): "cardiomegaly",  # an enlarged cardiac silhouette (its parent follows)
    ("Mediastinum", "enlarged"): "enlarged_cardiomediastinum",
    ("Cavitation", "lung"): "lung_cavity",
    ("Cysts", "lung"): "lung_cyst",  # not Cysts/humerus
    ("Blister", "lung"): "emphysema",  # bullae, as Bullous Emphysema
    ("Opacity", "round"): "nodule",  # the experts' code for a rounded lung opacity ("nodular density")
    ("Density", "round"): "nodule",
}
# Tags that suggest a finding without naming it: a blunted costophrenic angle (a small effusion, or pleural
# scarring), a prominent mediastinum or aorta (possibly widened).
UNCERTAIN_MAP: dict[tuple[str, str], str] = {
    ("Costophrenic Angle", "blunted"): "pleural_effusion",
    ("Mediastinum", "prominent"): "enlarged_cardiomediastinum",
    ("Aorta", "prominent"): "aortic_enlargement",
    ("Cardiac Shadow", "borderline"): "cardiomegaly",  # a borderline silhouette, no "enlarged" qualifier
}
UNCERTAIN_QUALIFIERS = {"borderline"}
NOT_INDEXED = {"No Indexing", "Technical Quality of Image Unsatisfactory"}  # terms that say nothing of findings
_TAGGED = {*MESH_MAP.values(), *SECOND_FINDING.values(), *QUALIFIED_MAP.values(), *UNCERTAIN_MAP.values()}
LABELLED = sorted(_TAGGED | {p for name in _TAGGED for p in ancestors(name)} | {"no_finding"})
PROJECTION_VIEW = {"Frontal": "FRONTAL", "Lateral": "LAT"}


def mesh_labels(mesh: str) -> dict[str, float]:
    """Canonical labels from one report's MeSH string, e.g. "Cardiomegaly/borderline;Opacity/lung/base";
    all NaN when the report was not indexed (no terms, or only ``NOT_INDEXED`` ones)."""
    terms = [t.strip() for t in str(mesh).split(";") if t.strip()]
    if all(t.split("/")[0].strip() in NOT_INDEXED for t in terms):
        return {name: NAN for name in LABELLED}
    labels = {name: NEGATIVE for name in LABELLED}
    devices_only = all(MESH_MAP.get(t.split("/")[0].strip()) == "support_devices" for t in terms)
    labels["no_finding"] = POSITIVE if terms == ["normal"] or devices_only else NEGATIVE
    for term in terms:
        head, *qualifiers = [p.strip() for p in term.split("/")]
        value = UNCERTAIN if UNCERTAIN_QUALIFIERS & set(qualifiers) else POSITIVE
        if head in LUNG_SITED and NON_LUNG_SITES & set(qualifiers):
            continue
        if head == "Calcinosis" and VASCULAR_SITES & set(qualifiers) and "lymph nodes" not in qualifiers:
            continue
        found = [(MESH_MAP[head], value)] if head in MESH_MAP else []
        found += [(SECOND_FINDING[head], value)] if head in SECOND_FINDING else []
        found += [(QUALIFIED_MAP[(head, q)], value) for q in qualifiers if (head, q) in QUALIFIED_MAP]
        found += [(UNCERTAIN_MAP[(head, q)], UNCERTAIN) for q in qualifiers if (head, q) in UNCERTAIN_MAP]
        for name, tagged in found:
            if labels[name] != POSITIVE:
                labels[name] = tagged
    return propagate_to_parents(labels)


@SOURCES.register("iu_xray", "IU X-ray / OpenI two-CSV form: reports with expert MeSH tags, frontal+lateral")
class IUXraySource(Source):
    name = "iu_xray"
    markers = ("indiana_reports.csv",)
    label_map = MESH_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        reports = pd.read_csv(self.require(root / "indiana_reports.csv"), dtype={"uid": str}).fillna("")
        projections = pd.read_csv(self.require(root / "indiana_projections.csv"), dtype={"uid": str})
        unknown = set(projections["projection"]) - set(PROJECTION_VIEW)
        if unknown:
            raise ValueError(f"{root / 'indiana_projections.csv'}: unknown projection values {sorted(unknown)}")
        images = projections.groupby("uid")
        records = []
        for row in reports.itertuples(index=False):
            base = {
                "source": self.name, "patient_id": f"iu{row.uid}", "study_id": f"iu{row.uid}",
                "findings": row.findings, "impression": row.impression,
                "report": full_report(row.findings, row.impression),
                **{label_column(k): v for k, v in mesh_labels(row.MeSH).items()},
            }
            views = images.get_group(row.uid) if row.uid in images.groups else None
            if views is None:
                records.append({**base, "id": f"iu{row.uid}", "image_path": ""})
                continue
            for view in views.itertuples(index=False):
                records.append({**base, "id": f"iu{row.uid}_{Path(view.filename).stem}",
                                "image_path": f"images/images_normalized/{view.filename}",
                                "view": PROJECTION_VIEW[view.projection]})
        frame = pd.DataFrame(records)
        frame = frame.assign(**{label_column(n): np.nan for n in FINDING_NAMES if n not in LABELLED})
        return RecordTable(frame, root, origin=str(root))
