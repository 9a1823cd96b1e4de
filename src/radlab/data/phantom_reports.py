"""Findings of a synthetic phantom study: drawing them at random, their labels, and the report text.

A study's findings are a ``dict[str, Lesion]`` holding only the findings present. Labels follow the
CheXpert convention: 1 present, 0 absent, -1 when the report hedges ("possible ...", "may represent ...").
``lung_opacity`` is positive whenever consolidation, a nodule or edema is drawn (the report describes them
as opacities), or when a standalone hazy opacity is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHANTOM_FINDINGS: tuple[str, ...] = ("cardiomegaly", "pleural_effusion", "consolidation", "lung_opacity",
                                     "nodule", "pneumothorax", "edema", "support_devices")
PREVALENCE: dict[str, float] = {"cardiomegaly": 0.18, "pleural_effusion": 0.18, "consolidation": 0.13,
                                "lung_opacity": 0.07, "nodule": 0.12, "pneumothorax": 0.12, "edema": 0.11,
                                "support_devices": 0.18}
SEVERITY_P = (0.45, 0.35, 0.20)
UNCERTAIN_RATE = 0.05
NEGATE_RATE = 0.45
DEVICES = ("ett", "pacemaker", "cvc")
OPACITY_SOURCES = ("consolidation", "nodule", "edema")

_SIDES = {"pleural_effusion": ("left", "right", "bilateral"), "pneumothorax": ("left", "right"),
          "consolidation": ("left", "right"), "lung_opacity": ("left", "right"), "nodule": ("left", "right"),
          "edema": ("bilateral",)}
_ZONED = ("consolidation", "lung_opacity", "nodule")
_MILD = {1: "mild", 2: "moderate", 3: "severe"}
_SIZE = {1: "small", 2: "moderate", 3: "large"}
_NODULE_MM = {1: (5, 10), 2: (10, 20), 3: (20, 30)}


@dataclass(frozen=True)
class Lesion:
    """One present finding: severity 1-3 (mild/moderate/severe), side and zone where they apply."""

    severity: int = 1
    side: str = ""
    zone: str = ""
    uncertain: bool = False
    count: int = 1
    size_mm: int = 0
    devices: tuple[str, ...] = ()
    tube_cm: int = 0


def sample_findings(rng: np.random.Generator) -> dict[str, Lesion]:
    """Each finding independently with its own prevalence; ~5% of mild ones are reported as uncertain."""
    out: dict[str, Lesion] = {}
    for name in PHANTOM_FINDINGS:
        if rng.random() >= PREVALENCE[name]:
            continue
        if name == "support_devices":
            devices = tuple(d for d in DEVICES if rng.random() < 0.5) or (DEVICES[int(rng.integers(3))],)
            out[name] = Lesion(devices=devices, tube_cm=int(rng.integers(3, 7)))
            continue
        severity = int(rng.choice(3, p=SEVERITY_P)) + 1
        sides = _SIDES.get(name, ("",))
        side = str(sides[int(rng.integers(len(sides)))])
        zone = str(("upper", "middle", "lower")[int(rng.integers(3))]) if name in _ZONED else ""
        uncertain = severity == 1 and bool(rng.random() < UNCERTAIN_RATE)
        count, size_mm = 1, 0
        if name == "nodule":
            count = 1 if uncertain else int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
            size_mm = int(rng.integers(*_NODULE_MM[severity]))
        out[name] = Lesion(severity=severity, side=side, zone=zone, uncertain=uncertain, count=count,
                           size_mm=size_mm)
    return out


def finding_labels(findings: dict[str, Lesion]) -> dict[str, float]:
    """``{finding: 1/0/-1}`` for every phantom finding plus ``no_finding``, which (as in CheXpert) ignores
    support devices: a study with only devices has no finding."""
    labels = {name: 0.0 for name in PHANTOM_FINDINGS}
    for name, lesion in findings.items():
        labels[name] = -1.0 if lesion.uncertain else 1.0
    if any(name in findings for name in OPACITY_SOURCES):
        labels["lung_opacity"] = 1.0
    labels["no_finding"] = float(all(v == 0.0 for k, v in labels.items() if k != "support_devices"))
    return labels


def _lobe(lesion: Lesion) -> str:
    if lesion.side == "left" and lesion.zone == "middle":
        return "left lingula"
    return f"{lesion.side} {lesion.zone} lobe"


def _effusion(lesion: Lesion) -> tuple[list[str], str]:
    both = lesion.side == "bilateral"
    size, side, s = _SIZE[lesion.severity], lesion.side, "s" if both else ""
    if lesion.uncertain:
        return ([f"Possible small {side} pleural effusion{s}.",
                 f"Blunting of the {side} costophrenic angle{s} may represent small pleural effusion{s}."],
                f"Possible small {side} pleural effusion{s}.")
    article = "There are" if both else "There is a"
    return ([f"{size.capitalize()} {side} pleural effusion{s}.",
             f"{article} {size} {side} pleural effusion{s} with blunting of the costophrenic angle{s}.",
             f"{size.capitalize()} {side} pleural effusion{s} layering at the base{s} with a meniscus."],
            f"{size.capitalize()} {side} pleural effusion{s}.")


def _positive(name: str, lesion: Lesion) -> tuple[list[str], str]:
    """Candidate FINDINGS sentences and the IMPRESSION sentence for one present finding."""
    mild, size, side = _MILD[lesion.severity], _SIZE[lesion.severity], lesion.side
    if name == "pleural_effusion":
        return _effusion(lesion)
    if name == "cardiomegaly":
        if lesion.uncertain:
            return (["Heart size is borderline enlarged, possible mild cardiomegaly.",
                     "Mild enlargement of the cardiac silhouette may represent cardiomegaly."],
                    "Possible mild cardiomegaly.")
        return ([f"{mild.capitalize()} cardiomegaly.", f"The cardiac silhouette is {mild}ly enlarged.",
                 f"Heart size is {mild}ly enlarged.",
                 f"There is {mild} enlargement of the cardiac silhouette, consistent with cardiomegaly."],
                f"{mild.capitalize()} cardiomegaly.")
    if name == "consolidation":
        lobe = _lobe(lesion)
        if lesion.uncertain:
            return ([f"Subtle opacity in the {lobe} may represent early consolidation.",
                     f"Mild {lobe} opacity, possible consolidation."],
                    f"{lobe.capitalize()} opacity, possible early consolidation.")
        return ([f"{mild.capitalize()} consolidation in the {lobe}, seen as airspace opacity.",
                 f"There is {mild} airspace opacity in the {lobe} consistent with consolidation.",
                 f"{mild.capitalize()} {lobe} consolidation with patchy opacity."],
                f"{mild.capitalize()} {lobe} consolidation.")
    if name == "lung_opacity":
        where = f"{side} {lesion.zone} zone"
        if lesion.uncertain:
            return [f"Possible faint opacity in the {where}."], f"Possible faint {where} opacity."
        return ([f"{mild.capitalize()} hazy opacity in the {where}.",
                 f"There is a {mild} ill-defined opacity in the {where}."],
                f"{mild.capitalize()} {where} opacity.")
    if name == "nodule":
        lobe, mm = _lobe(lesion), lesion.size_mm
        if lesion.uncertain:
            return ([f"Small rounded opacity in the {lobe} may represent a nodule.",
                     f"Possible {mm} mm nodule in the {lobe}, seen as a faint rounded opacity."],
                    f"Possible {lobe} nodule.")
        if lesion.count > 1:
            word = {2: "Two", 3: "Three"}[lesion.count]
            return ([f"{word} nodular opacities in the {side} lung, the largest measuring {mm} mm in the {lobe}."],
                    f"{word} {side} pulmonary nodules, the largest {mm} mm.")
        return ([f"A {mm} mm nodular opacity in the {lobe}.",
                 f"{size.capitalize()} {mm} mm pulmonary nodule in the {lobe}, seen as a rounded opacity."],
                f"{mm} mm {lobe} nodule.")
    if name == "pneumothorax":
        if lesion.uncertain:
            return ([f"Possible small {side} apical pneumothorax.",
                     f"A thin {side} apical lucency may represent a small pneumothorax."],
                    f"Possible small {side} pneumothorax.")
        return ([f"{size.capitalize()} {side} apical pneumothorax with a visible pleural line.",
                 f"There is a {size} {side} pneumothorax.",
                 f"{size.capitalize()} {side} pneumothorax, the pleural edge is displaced from the chest wall."],
                f"{size.capitalize()} {side} pneumothorax.")
    if name == "edema":
        if lesion.uncertain:
            return (["Mild perihilar opacities may represent early pulmonary edema."],
                    "Possible mild pulmonary edema.")
        return ([f"{mild.capitalize()} pulmonary edema with bilateral perihilar opacities.",
                 f"{mild.capitalize()} interstitial edema with perihilar haziness and interstitial opacities.",
                 f"Bilateral perihilar opacities and septal lines consistent with {mild} pulmonary edema."],
                f"{mild.capitalize()} pulmonary edema.")
    device_text = {
        "ett": f"Endotracheal tube terminates {lesion.tube_cm} cm above the carina.",
        "pacemaker": "Left chest wall pacemaker with a lead terminating in the right ventricle.",
        "cvc": "Right internal jugular central venous catheter terminates in the superior vena cava.",
    }
    return [" ".join(device_text[d] for d in lesion.devices)], "Support devices as described."


_NEGATIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
                     "No cardiomegaly."),
    "pleural_effusion": ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusions are seen."),
    "consolidation": ("No focal consolidation.", "There is no consolidation."),
    "lung_opacity": ("No focal airspace opacity.", "There is no focal lung opacity."),
    "nodule": ("No suspicious pulmonary nodules.", "No pulmonary nodule is identified."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "edema": ("No pulmonary edema.", "There is no pulmonary edema."),
    "support_devices": ("No support devices are present.",),
}
_ORDER = ("support_devices", "cardiomegaly", "edema", "consolidation", "lung_opacity", "nodule",
          "pleural_effusion", "pneumothorax")
_URGENCY = ("pneumothorax", "pleural_effusion", "consolidation", "edema", "lung_opacity", "nodule",
            "cardiomegaly", "support_devices")
_NORMAL = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
           "Normal chest radiograph.")


def _pick(options: list[str] | tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def write_report(findings: dict[str, Lesion], rng: np.random.Generator) -> tuple[str, str]:
    """``(findings, impression)`` text: varied templates, hedged when uncertain, random explicit negations."""
    labels = finding_labels(findings)
    negate = {n for n in PHANTOM_FINDINGS if labels[n] == 0.0 and rng.random() < NEGATE_RATE}
    sentences: list[str] = []
    for name in _ORDER:
        if name in findings:
            sentences.append(_pick(_positive(name, findings[name])[0], rng))
        elif name == "pleural_effusion" and {name, "pneumothorax"} <= negate and rng.random() < 0.4:
            sentences.append("No pleural effusion or pneumothorax.")
            negate.discard("pneumothorax")
        elif name in negate:
            sentences.append(_pick(_NEGATIONS[name], rng))
    lungs_clear = not any(n in findings for n in ("consolidation", "lung_opacity", "nodule", "edema"))
    if lungs_clear and (not sentences or rng.random() < 0.5):
        sentences.insert(min(2, len(sentences)), "The lungs are clear.")
    impression = [_positive(n, findings[n])[1] for n in _URGENCY if n in findings]
    if all(n == "support_devices" for n in findings):
        impression.append(_pick(_NORMAL[:2] if findings else _NORMAL, rng))
    return " ".join(sentences), " ".join(impression)
