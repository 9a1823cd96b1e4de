"""The NLM tuberculosis sets, Montgomery County and Shenzhen, in their release layouts.

Montgomery ROOT (``MontgomerySet``): ``CXR_png/MCUCXR_0001_0.png``, ``ClinicalReadings/MCUCXR_0001_0.txt``
("Patient's Sex: F", "Patient's Age: 027Y", then the reading) and ``ManualMask/{leftMask,rightMask}/`` PNGs.
Shenzhen ROOT (``ChinaSet_AllFiles``): ``CXR_png/CHNCXR_0001_0.png``, ``ClinicalReadings/CHNCXR_0001_0.txt``
("male 45yrs" or variants, then the reading) and, when the separately released lung masks are placed in
``mask/``, ``CHNCXR_0001_0_mask.png``. The file name's last digit is the label: 1 tuberculosis, 0 normal
(tuberculosis 0, no_finding 1). The reading becomes the report's impression; "NO REPORT" leaves it empty. PA.
Patients: one per image number, except that a Montgomery reading noting "(same pt as MCUCXR_0162_1)" puts
its image with that image's patient (the note is dropped from the text), so patient-level splits keep them
together. Each image is its own study.

Masks: Montgomery ships left and right lungs separately (``mask_lung_left``, ``mask_lung_right``); its
``mask_lungs`` (their union) is a derived file, written only with ``mask_dir`` (``radlab data import``
passes ``DIR/masks``). Shenzhen's masks are already whole-lung (``mask_lungs``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from radlab.data.records import RecordTable
from radlab.data.reports import full_report
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import NAN, SourceFormatError, age_years, finish, harmonise, sex_code

LABEL_MAP: dict[str, str] = {"1": "tuberculosis", "0": "no_finding"}  # file-name suffix -> finding
_NAME = re.compile(r"^(?P<prefix>MCUCXR|CHNCXR)_(?P<number>\d+)_(?P<label>[01])$")
_MONTGOMERY = re.compile(r"Patient'?s\s+Sex:\s*(?P<sex>\w*)\s*\n\s*Patient'?s\s+Age:\s*(?P<age>\w*)", re.I)
_SHENZHEN = re.compile(r"^\s*(?P<sex>fem[a-z]*|male)\s*,?\s*(?P<age>\d+)\s*(?P<unit>yrs?|years?|months?|days?)?",
                       re.I)  # "female24yrs", "male , 29yrs", "femal 32yrs", "male 42", "male 16month"
_SAME_PATIENT = re.compile(r"\(?\s*same\s+pt\s+as\s+MCUCXR_(?P<number>\d+)(?:_[01])?\s*\)?", re.I)
_NO_REPORT = re.compile(r"\W*no\s+report\W*", re.I)


def reading(path: Path, pattern: re.Pattern[str]) -> tuple[str, float, str]:
    """(sex, age in years, reading text) from a clinical reading file; '' / NaN when a field is missing."""
    if not path.exists():
        return "", NAN, ""
    text = path.read_text(errors="replace")
    match = pattern.search(text)
    if match is None:
        return "", NAN, " ".join(text.split())
    unit = (match.groupdict().get("unit") or "Y").upper()
    age = match.group("age")
    age = f"{age}{'M' if unit.startswith('MONTH') else 'D' if unit.startswith('DAY') else 'Y'}" if age.isdigit() else age
    sex = match.group("sex").upper()
    sex = "F" if sex.startswith("FEM") else sex
    return sex_code(sex), age_years(age), " ".join(text[match.end():].split())


def same_patient(text: str) -> tuple[str | None, str]:
    """(image number of the patient a "(same pt as MCUCXR_0162_1)" note names, or None; the reading without
    the note, '' when only "NO REPORT" is left)."""
    match = _SAME_PATIENT.search(text)
    rest = " ".join(_SAME_PATIENT.sub(" ", text).split())
    return (match.group("number") if match else None), ("" if _NO_REPORT.fullmatch(rest) else rest)


class _TBSource(Source):
    prefix = ""
    readings_pattern: re.Pattern[str] = _SHENZHEN
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        images = sorted(self.require(root / "CXR_png").glob("*.png"))
        records = []
        for image in images:
            match = _NAME.match(image.stem)
            if match is None:
                raise SourceFormatError(f"{image}: expected a name like {self.prefix}_0001_0.png")
            sex, age, text = reading(root / "ClinicalReadings" / f"{image.stem}.txt", self.readings_pattern)
            same, text = same_patient(text)
            records.append({
                "id": f"{self.name}_{image.stem}", "image_path": f"CXR_png/{image.name}", "source": self.name,
                "patient_id": f"{self.name}_{same or match.group('number')}",
                "study_id": f"{self.name}_{match.group('number')}", "view": "PA", "sex": sex, "age": age,
                "impression": text, "report": full_report("", text),
                **harmonise({match.group("label"): 1.0}, LABEL_MAP, default=0.0),
                **self.masks(root, image.stem),
            })
        if not records:
            raise SourceFormatError(f"{root / 'CXR_png'}: no PNG images")
        return finish(records, root, str(root))

    def masks(self, root: Path, stem: str) -> dict[str, str]:  # pragma: no cover - per set
        raise NotImplementedError


@SOURCES.register("montgomery", "Montgomery County TB set: PNG, clinical readings, left/right lung masks")
class MontgomerySource(_TBSource):
    name = "montgomery"
    prefix = "MCUCXR"
    markers = ("CXR_png/MCUCXR_*.png",)
    readings_pattern = _MONTGOMERY

    def __init__(self, mask_dir: str | Path | None = None) -> None:
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None

    def masks(self, root: Path, stem: str) -> dict[str, str]:
        left, right = (root / "ManualMask" / side / f"{stem}.png" for side in ("leftMask", "rightMask"))
        if not (left.exists() and right.exists()):
            return {}
        out = {"mask_lung_left": str(left.relative_to(root)), "mask_lung_right": str(right.relative_to(root))}
        if self.mask_dir is not None:
            self.mask_dir.mkdir(parents=True, exist_ok=True)
            union = np.maximum(np.asarray(Image.open(left).convert("L")), np.asarray(Image.open(right).convert("L")))
            path = self.mask_dir / f"{stem}_lungs.png"
            Image.fromarray(((union > 0) * 255).astype(np.uint8)).save(path)
            out["mask_lungs"] = str(path.resolve())
        return out


@SOURCES.register("shenzhen", "Shenzhen TB set: PNG, clinical readings, optional lung masks in mask/")
class ShenzhenSource(_TBSource):
    name = "shenzhen"
    prefix = "CHNCXR"
    markers = ("CXR_png/CHNCXR_*.png",)
    readings_pattern = _SHENZHEN

    def masks(self, root: Path, stem: str) -> dict[str, str]:
        path = root / "mask" / f"{stem}_mask.png"
        return {"mask_lungs": str(path.relative_to(root))} if path.exists() else {}
