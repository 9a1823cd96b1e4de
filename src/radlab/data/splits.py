"""Deterministic patient-level splits: every image of a patient lands in the same split."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import pandas as pd

from radlab.data.records import RecordTable

SPLIT_ORDER = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
log = logging.getLogger(__name__)


def patient_uniform(patient_ids: list[str], seed: int | str) -> np.ndarray:
    """A stable number in [0, 1) per patient, from a hash of (seed, patient id); no global RNG state."""
    digests = [hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8] for pid in patient_ids]
    return np.array([int.from_bytes(d, "big") / 2**64 for d in digests])


def patient_subset(table: RecordTable, fraction: float, seed: int) -> RecordTable:
    """The records of a seeded ``fraction`` of the table's patients (at least one), all images of each. Patients
    are ranked by a hash of (seed, id) independent of the split draw, so with one seed a smaller fraction is a
    subset of a larger one (1% within 10% within 100%), as low-data sweeps need."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a patient subset fraction must be in (0, 1], got {fraction}")
    patients = np.array(sorted(table.frame["patient_id"].unique()))
    order = np.argsort(patient_uniform(patients.tolist(), f"subset-{seed}"), kind="stable")
    keep = set(patients[order[: max(1, math.ceil(fraction * len(patients)))]])
    return table.subset(np.flatnonzero(table.frame["patient_id"].isin(keep).to_numpy()))


def checked_fractions(fractions: dict[str, float]) -> dict[str, float]:
    """The fractions in the fixed order train, val, test, so that a patient's split depends on the seed and the
    fractions only, never on the order a config wrote them in; refuses other names, values outside [0, 1] and
    sums other than 1."""
    unknown = sorted(set(fractions) - set(SPLIT_ORDER))
    if unknown:
        raise ValueError(f"split fractions name {unknown}; splits are {list(SPLIT_ORDER)}")
    if any(not 0 <= value <= 1 for value in fractions.values()):
        raise ValueError(f"split fractions must each be in [0, 1], got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    return {name: fractions[name] for name in SPLIT_ORDER if name in fractions}


def assign_splits(table: RecordTable, fractions: dict[str, float] | None = None, seed: int = 0,
                  keep_existing: bool = True) -> RecordTable:
    """Return a copy with a ``split`` per record, drawn per patient. With ``keep_existing``, records that carry
    a split (an official one from the provider) keep it and the patient's other records follow it; a patient
    whose provider splits disagree is an error. The result is checked to be patient-disjoint, except for the
    official splits of question-level sources (``Source.split_unit``), which stay as the benchmark has them."""
    fractions = checked_fractions(fractions or DEFAULT_FRACTIONS)
    frame = table.frame.copy()
    u = patient_uniform(frame["patient_id"].tolist(), seed)
    edges = np.cumsum(list(fractions.values()))
    names = np.array(list(fractions))[np.minimum(np.searchsorted(edges, u, side="right"), len(edges) - 1)]
    official = np.zeros(len(frame), bool)
    if keep_existing:
        official = _by_question(frame) & (frame["split"] != "").to_numpy()
        provider = _provider_splits(frame[~official]).to_dict()
        given = np.array([provider.get(patient, "") for patient in frame["patient_id"]], dtype=object)
        names = np.where(official, frame["split"].to_numpy(), np.where(given != "", given, names))
        names = validation_from_train(frame, names, given == "train", fractions, seed)
    frame["split"] = names
    out = RecordTable(frame, table.root)
    check_patient_disjoint(out, exempt=official)
    return out


def validation_from_train(frame: pd.DataFrame, names: np.ndarray, provider_train: np.ndarray,
                          fractions: dict[str, float], seed: int) -> np.ndarray:
    """A source whose provider splits have no validation split (NIH and VinDr's PhysioNet release ship train and
    test) gets one from its official training patients: the share val / (train + val) of them, drawn per patient
    with ``seed``; their test split stays the provider's. Model selection then never needs the test split."""
    share = fractions.get("val", 0.0) / max(fractions.get("train", 0.0) + fractions.get("val", 0.0), 1e-12)
    names = names.copy()
    for source in frame["source"].unique():
        rows = (frame["source"] == source).to_numpy()
        if not share or (names[rows] == "val").any() or not provider_train[rows].any():
            continue
        candidates = rows & provider_train
        drawn = patient_uniform(frame["patient_id"][candidates].tolist(), f"val-{seed}") < share
        chosen = set(frame["patient_id"][candidates][drawn])
        names[candidates & frame["patient_id"].isin(chosen).to_numpy()] = "val"
        log.info("%s has no validation split: %d of its training patients drawn as val (seed %d); its test split "
                 "is the provider's", source, len(chosen), seed)
    return names


def _by_question(frame: pd.DataFrame) -> np.ndarray:
    """Rows of sources whose official split is by question (``Source.split_unit``); logs how many of their
    images the official split puts in several splits, as the benchmark defines it."""
    from radlab.data.sources.base import Source

    units = {name: Source.trait(name, "split_unit") for name in frame["source"].unique()}
    rows = frame["source"].map(units).to_numpy() == "question"
    shared = int((frame[rows].groupby("patient_id")["split"].nunique() > 1).sum()) if rows.any() else 0
    if shared:
        log.warning("%d images of question-level official splits (%s) have questions in several splits; kept "
                    "as the benchmark defines them", shared, ", ".join(sorted(frame["source"][rows].unique())))
    return rows


def _provider_splits(frame: pd.DataFrame) -> pd.Series:
    """The provider's split per patient (patients without one are absent); raise if a patient's records carry
    different splits. Messages give counts and sources, never patient ids (they can come from DICOM)."""
    given = frame.loc[frame["split"] != "", ["patient_id", "split", "source"]]
    pairs = given.drop_duplicates(["patient_id", "split"])
    conflicting = pairs["patient_id"][pairs["patient_id"].duplicated()].unique()
    if len(conflicting):
        sources = sorted(set(given.loc[given["patient_id"].isin(conflicting), "source"]))
        raise ValueError(f"{len(conflicting)} patients have records in different provider splits (source "
                         f"{', '.join(sources)}); a patient's records share one split: fix the split column (or the "
                         f"provider's split file), or leave the split empty for those patients' records so their "
                         f"splits are drawn per patient")
    return pairs.set_index("patient_id")["split"]


def check_patient_disjoint(table: RecordTable, exempt: np.ndarray | None = None) -> None:
    """Raise if any patient appears in more than one split (counts and sources only, never patient ids);
    ``exempt`` rows (official question-level splits) are left out of the check."""
    frame = table.frame if exempt is None else table.frame[~exempt]
    per_patient = frame.groupby("patient_id")["split"].nunique()
    leaking = per_patient.index[per_patient > 1]
    if len(leaking):
        sources = sorted(set(frame.loc[frame["patient_id"].isin(leaking), "source"]))
        raise ValueError(f"{len(leaking)} patients appear in several splits (source {', '.join(sources)})")
