"""The canonical fine-grained finding taxonomy every source's labels are mapped into.

It covers CheXpert-14, NIH ChestX-ray14, VinDr-CXR and the main PadChest findings. Each finding has a
parent (a positive child implies a positive parent, never the reverse) and a short clinical description
used by descriptive zero-shot prompts. Label values everywhere: 1 positive, 0 negative, -1 uncertain,
NaN not annotated by that source (masked, never read as negative).
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


@dataclass(frozen=True)
class Finding:
    name: str
    description: str
    parent: str | None = None


FINDINGS: tuple[Finding, ...] = (
    Finding("no_finding", "no acute cardiopulmonary abnormality"),
    Finding("enlarged_cardiomediastinum", "widened cardiomediastinal silhouette"),
    Finding("cardiomegaly", "enlarged cardiac silhouette, cardiothoracic ratio above one half",
            "enlarged_cardiomediastinum"),
    Finding("aortic_enlargement", "enlarged or tortuous thoracic aorta", "enlarged_cardiomediastinum"),
    Finding("lung_opacity", "area of increased attenuation in the lung"),
    Finding("lung_lesion", "focal lung lesion such as a nodule or mass", "lung_opacity"),
    Finding("nodule", "small round focal opacity under three centimetres", "lung_lesion"),
    Finding("mass", "focal opacity larger than three centimetres", "lung_lesion"),
    Finding("lung_cavity", "gas-filled space within a lung lesion or consolidation", "lung_lesion"),
    Finding("lung_cyst", "thin-walled air-filled lung cyst", "lung_lesion"),
    Finding("edema", "pulmonary edema with vascular congestion and interstitial thickening", "lung_opacity"),
    Finding("consolidation", "airspace opacity with air bronchograms", "lung_opacity"),
    Finding("pneumonia", "infectious airspace consolidation", "consolidation"),
    Finding("atelectasis", "collapse or volume loss of lung", "lung_opacity"),
    Finding("infiltration", "ill-defined pulmonary infiltrate", "lung_opacity"),
    Finding("interstitial_lung_disease", "reticular interstitial pattern", "lung_opacity"),
    Finding("fibrosis", "pulmonary fibrosis with reticular scarring", "interstitial_lung_disease"),
    Finding("tuberculosis", "findings of pulmonary tuberculosis", "lung_opacity"),
    Finding("calcification", "calcified granuloma or calcified focus"),
    Finding("emphysema", "hyperinflated lungs with flattened diaphragms"),
    Finding("copd", "chronic obstructive pulmonary disease with hyperinflation"),
    Finding("enlarged_pulmonary_artery", "enlarged main or central pulmonary arteries"),
    Finding("mediastinal_shift", "displacement of the mediastinum to one side"),
    Finding("pneumothorax", "air in the pleural space with a visible pleural line"),
    Finding("pleural_effusion", "fluid in the pleural space blunting the costophrenic angle"),
    Finding("pleural_thickening", "thickening of the pleura", "pleural_other"),
    Finding("pleural_other", "other pleural abnormality"),
    Finding("fracture", "bone fracture such as a rib or clavicle fracture"),
    Finding("hernia", "hiatal or diaphragmatic hernia"),
    Finding("scoliosis", "lateral curvature of the spine"),
    Finding("support_devices", "lines, tubes, pacemaker or other support devices"),
)

FINDING_NAMES: tuple[str, ...] = tuple(f.name for f in FINDINGS)
BY_NAME: dict[str, Finding] = {f.name: f for f in FINDINGS}


def check_finding(name: str) -> str:
    if name not in BY_NAME:
        raise KeyError(f"{name!r} is not in radlab's finding taxonomy; known: {', '.join(FINDING_NAMES)}")
    return name


def ancestors(name: str) -> list[str]:
    """Parents of a finding, nearest first."""
    out: list[str] = []
    parent = BY_NAME[check_finding(name)].parent
    while parent is not None:
        out.append(parent)
        parent = BY_NAME[parent].parent
    return out


def display_name(name: str) -> str:
    """Human words for a finding, as used in prompts: 'pleural_effusion' -> 'pleural effusion'."""
    return check_finding(name).replace("_", " ")


def propagate_to_parents(labels: dict[str, float]) -> dict[str, float]:
    """A positive child makes its parents positive; an uncertain child makes a non-positive parent uncertain."""
    out = dict(labels)
    for name, value in labels.items():
        for parent in ancestors(name) if value in (POSITIVE, UNCERTAIN) else []:
            if value == POSITIVE or out.get(parent) != POSITIVE:
                out[parent] = value
    return out
