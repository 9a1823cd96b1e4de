"""Deterministic patient-level splits: every image of a patient lands in the same split."""

from __future__ import annotations

import hashlib

import numpy as np

from radlab.data.records import RecordTable

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def patient_uniform(patient_ids: list[str], seed: int) -> np.ndarray:
    """A stable number in [0, 1) per patient, from a hash of (seed, patient id); no global RNG state."""
    digests = [hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8] for pid in patient_ids]
    return np.array([int.from_bytes(d, "big") / 2**64 for d in digests])


def assign_splits(table: RecordTable, fractions: dict[str, float] | None = None, seed: int = 0,
                  keep_existing: bool = True) -> RecordTable:
    """Return a copy with a ``split`` per record, drawn per patient. Records that already carry a split
    (an official one from the provider) keep it unless ``keep_existing`` is False."""
    fractions = fractions or DEFAULT_FRACTIONS
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    frame = table.frame.copy()
    u = patient_uniform(frame["patient_id"].tolist(), seed)
    edges = np.cumsum(list(fractions.values()))
    names = np.array(list(fractions))[np.minimum(np.searchsorted(edges, u, side="right"), len(edges) - 1)]
    todo = (frame["split"] == "").to_numpy() if keep_existing else np.ones(len(frame), bool)
    frame.loc[todo, "split"] = names[todo]
    return RecordTable(frame, table.root)


def check_patient_disjoint(table: RecordTable) -> None:
    """Raise if any patient appears in more than one split."""
    per_patient = table.frame.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        raise ValueError(f"{len(leaking)} patients appear in several splits, e.g. {leaking.index[0]!r}")
