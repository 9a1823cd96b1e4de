"""Helpers every source adapter shares: label harmonisation, demographics, views and clear input errors.

Harmonisation rules (all adapters): a native label maps to one canonical finding through the adapter's
visible ``label_map``; several natives mapping to one finding combine as positive > uncertain > negative;
a positive (or uncertain) child sets its parents (``propagate_to_parents``); a canonical finding that no
native label of the source maps to stays NaN (not annotated), never negative.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab.data.records import RecordTable, label_column, shown
from radlab.data.taxonomy import (
    FINDING_NAMES,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    check_finding,
    propagate_to_parents,
)

NAN = float("nan")
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


class SourceFormatError(ValueError):
    """A provider file that does not match the expected layout; the message names file, row and problem."""


def bad_row(path: Path | str, row: int, problem: str) -> SourceFormatError:
    """An error for data row ``row`` (0-based, header excluded) of ``path``; rows are printed 1-based."""
    return SourceFormatError(f"{path}: data row {row + 1}: {problem}")


def read_table(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read a CSV (optionally .gz) and check that the provider's columns are there."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise SourceFormatError(f"{path}: cannot read as CSV ({err})") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SourceFormatError(f"{path}: missing column(s) {missing}; found {list(frame.columns)[:12]}")
    return frame


def combine(values: Iterable[float]) -> float:
    """Several readings of one finding: positive > uncertain > negative > not annotated."""
    best = NAN
    for value in values:
        if value is not None and not pd.isna(value) and (math.isnan(best) or _RANK[float(value)] > _RANK[best]):
            best = float(value)
    return best


def harmonise(native: Mapping[str, float], label_map: Mapping[str, str], default: float = NAN) -> dict[str, float]:
    """Native label values -> one value per canonical finding (``label_<name>`` keys, all findings).

    ``default`` is the value of a mapped native label the record does not list: NaN for sources whose
    blanks mean "not mentioned" (CheXpert), 0 for exhaustive label lists (NIH, PadChest, VinDr)."""
    grouped: dict[str, list[float]] = {}
    for name, canonical in label_map.items():
        grouped.setdefault(check_finding(canonical), []).append(native.get(name, default))
    labels = {c: combine(v) for c, v in grouped.items()}
    labels = propagate_to_parents({k: v for k, v in labels.items() if not math.isnan(v)})
    return {label_column(n): labels.get(n, NAN) for n in FINDING_NAMES}


def chexpert_value(value: Any, path: Path | str, row: int, column: str) -> float:
    """A CheXpert-style cell: 1, 0, -1, or blank (not mentioned -> NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return NAN
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = NAN
    if number not in (POSITIVE, NEGATIVE, UNCERTAIN):
        raise bad_row(path, row, f"{column}={shown(value)}; expected 1, 0, -1 or blank")
    return number


_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "FEMAL": "F"}


def sex_code(value: Any) -> str:
    """'M'/'F' from the many spellings providers use; anything else (O, Unknown, blank) is ''."""
    return _SEX.get(str(value).strip().upper(), "") if value is not None else ""


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_AGE_UNITS = {"": 1.0, "Y": 1.0, "YR": 1.0, "YRS": 1.0, "YEAR": 1.0, "YEARS": 1.0, "M": 1 / 12,
              "MONTH": 1 / 12, "MONTHS": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25, "DAY": 1 / 365.25,
              "DAYS": 1 / 365.25}


def age_years(value: Any) -> float:
    """Age in years from a number, a DICOM age string ('058Y', '006M') or '45yrs'; NaN when absent or
    outside 0-120 (provider data errors such as NIH's 400-year-olds are not guessed at)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NAN
    match = _AGE.match(str(value))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _AGE_UNITS:
        return NAN
    years = float(match.group(1)) * _AGE_UNITS[unit]
    return years if 0 <= years <= 120 else NAN


_VIEWS = {"PA": "PA", "POSTEROANTERIOR": "PA", "AP": "AP", "ANTEROPOSTERIOR": "AP", "AP SUPINE": "AP", "APS": "AP",
          "AP SEMI ERECT": "AP", "AP ERECT": "AP", "AP_HORIZONTAL": "AP", "AP HORIZONTAL": "AP",
          "L": "LAT", "LL": "LAT", "RL": "LAT", "LAT": "LAT", "LATERAL": "LAT", "XTABLE LATERAL": "LAT",
          "FRONTAL": "FRONTAL"}


def view_code(value: Any) -> str:
    """The record view (PA, AP, FRONTAL, LAT) from a provider's view string; other views (oblique,
    decubitus, lordotic, unknown) are ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _VIEWS.get(" ".join(str(value).strip().upper().split()), "")


def boxes_json(boxes: Sequence[Mapping[str, Any]]) -> str:
    """The ``boxes`` column: a JSON list of {finding (canonical, '' if unmapped), native, x, y, w, h[, reader]}
    in original pixel units; '' in the column means the record was not box-annotated."""
    return json.dumps([{k: (round(float(v), 2) if k in ("x", "y", "w", "h") else v) for k, v in b.items()} for b in boxes])


def finish(records: list[dict[str, Any]], root: Path, origin: str) -> RecordTable:
    """Records -> a validated table; every canonical label column exists (NaN where not annotated)."""
    frame = pd.DataFrame(records)
    missing = {label_column(n): np.nan for n in FINDING_NAMES if label_column(n) not in frame}
    return RecordTable(frame.assign(**missing), root, origin=origin)
