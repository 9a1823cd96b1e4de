"""The record table: the one data model every part of radlab reads.

One row per image (a report without images is one text-only row with an empty image_path). Core columns are fixed (``CORE_COLUMNS``); harmonised labels are ``label_<finding>``
columns in the canonical taxonomy (1 positive, 0 negative, -1 uncertain, NaN not annotated by the
source); masks are ``mask_<structure>`` columns holding paths. Relative paths resolve against the table's
root, which is the folder of the Parquet file it was read from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import atomic
from radlab.data.taxonomy import BY_NAME, FINDING_NAMES

LABEL_PREFIX = "label_"
MASK_PREFIX = "mask_"
TABLE_FILE = "records.parquet"

CORE_COLUMNS: dict[str, str] = {
    "id": "string",
    "image_path": "string",
    "source": "string",
    "patient_id": "string",
    "study_id": "string",
    "view": "string",
    "split": "string",
    "sex": "string",
    "age": "float64",
    "findings": "string",
    "impression": "string",
    "report": "string",
}
VIEWS = {"PA", "AP", "FRONTAL", "LAT", ""}  # FRONTAL: frontal, PA or AP not recorded
SEXES = {"M", "F", ""}
SPLITS = {"train", "val", "test", ""}
LABEL_VALUES = {1.0, 0.0, -1.0}
IDENTIFIERS = ("id", "patient_id", "study_id")


class RecordError(ValueError):
    """A record table that breaks the data contract; the message names the row and the problem."""


def shown(value: Any) -> str:
    """A cell value for an error message as the user wrote it: ``2``, ``0.5``, ``'yes'`` (numpy scalars as the
    plain value, not ``np.int64(2)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def label_column(finding: str) -> str:
    return LABEL_PREFIX + finding


class RecordTable:
    """A validated table of image records with a root folder for relative paths."""

    def __init__(self, frame: pd.DataFrame, root: Path | str | None = None, origin: str = "records") -> None:
        self.root = Path(root).absolute() if root is not None else Path.cwd()  # relative paths: from here
        self.frame = _normalise(frame, origin)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], root: Path | str | None = None) -> RecordTable:
        return cls(pd.DataFrame(list(records)), root)

    @classmethod
    def read(cls, path: Path | str) -> RecordTable:
        path = Path(path)
        if path.is_dir():
            path = path / TABLE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no record table at {path}")
        return cls(pd.read_parquet(path), path.parent, origin=str(path))

    def write(self, path: Path | str) -> Path:
        """Write Parquet atomically; paths are written relative to the new root where possible."""
        path = Path(path)
        if path.suffix != ".parquet":
            path = path / TABLE_FILE
        frame = self.frame.copy()
        for col in ["image_path", *self.mask_columns]:
            frame[col] = [_relative(self._resolve(p), path.parent) if p else p for p in frame[col]]
        with atomic.writing(path) as handle:
            frame.to_parquet(handle, index=False)
        return path

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def label_names(self) -> list[str]:
        return [c[len(LABEL_PREFIX):] for c in self.frame.columns if c.startswith(LABEL_PREFIX)]

    @property
    def mask_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c.startswith(MASK_PREFIX)]

    def labels(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Labels as a float array [N, K]: 1, 0, -1 or NaN (not annotated)."""
        names = list(names) if names is not None else self.label_names
        out = np.full((len(self), len(names)), np.nan, dtype=np.float32)
        for k, name in enumerate(names):
            col = label_column(name)
            if col in self.frame:
                out[:, k] = self.frame[col].to_numpy(dtype=np.float32, na_value=np.nan)
        return out

    def image_path(self, i: int) -> Path:
        value = self.frame["image_path"].iat[i]
        if not value:
            raise RecordError(f"row {i} ({self.frame['id'].iat[i]}) is a text-only record with no image")
        return self._resolve(value)

    def has_images(self) -> np.ndarray:
        return (self.frame["image_path"] != "").to_numpy()

    def mask_path(self, i: int, structure: str) -> Path | None:
        value = self.frame[MASK_PREFIX + structure].iat[i] if MASK_PREFIX + structure in self.frame else None
        return self._resolve(value) if value else None

    def texts(self) -> list[str]:
        return [str(t) for t in self.frame["report"].fillna("")]

    def subset(self, rows: np.ndarray | Sequence[int] | pd.Series) -> RecordTable:
        rows = np.asarray(rows)
        frame = self.frame[rows] if rows.dtype == bool else self.frame.iloc[rows]
        return RecordTable(frame.reset_index(drop=True), self.root)

    def split(self, name: str) -> RecordTable:
        return self.subset((self.frame["split"] == name).to_numpy())

    def digest(self) -> dict[str, object]:
        """What identifies these records for a later leakage check: counts and a hash of (id, patient) pairs,
        independent of row order and of everything else in the table."""
        pairs = sorted(self.frame["id"] + "\x1f" + self.frame["patient_id"])
        return {"records": len(pairs), "patients": int(self.frame["patient_id"].nunique()),
                "sha256": hashlib.sha256("\n".join(pairs).encode()).hexdigest()}

    def with_absolute_paths(self) -> RecordTable:
        frame = self.frame.copy()
        for col in ["image_path", *self.mask_columns]:
            frame[col] = [str(self._resolve(p)) if p else p for p in frame[col]]
        return RecordTable(frame, self.root)

    @staticmethod
    def concat(tables: Sequence[RecordTable], names: Sequence[str] | None = None) -> RecordTable:
        """Merge tables; a label one source lacks stays NaN (not annotated) for its rows. Tables must not share
        record or patient ids (see ``check_disjoint_ids``); ``names`` label them in that error."""
        check_disjoint_ids(tables, names or [f"table {k + 1}" for k in range(len(tables))])
        frames = [t.with_absolute_paths().frame for t in tables]
        merged = pd.concat(frames, ignore_index=True, sort=False)
        return RecordTable(merged, tables[0].root if tables else None)

    def _resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.root / p


def check_disjoint_ids(tables: Sequence[RecordTable], names: Sequence[str]) -> None:
    """Raise if two tables share record ids or patient ids. An equal id from two sources may or may not be the
    same image or person; merging them silently (or renaming them apart) would make patient-level splits and
    leakage audits wrong, so the user decides."""
    for k, table in enumerate(tables):
        for j, other in enumerate(tables[:k]):
            shared = _shared_ids(other.frame, table.frame)
            if shared:
                raise RecordError(f"{names[j]} and {names[k]} share {shared}; equal ids from two sources are "
                                  f"ambiguous: give each source distinct id and patient_id values (e.g. a site "
                                  f"prefix, as adapters use 'siim_'), or put records of the same patients in one "
                                  f"source")


def _shared_ids(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """What ``a`` and ``b`` share, '' if nothing: record ids are named, patient ids only counted (they can come
    from DICOM PatientID)."""
    ids = b["id"][b["id"].isin(a["id"])]
    patients = len(set(a["patient_id"]) & set(b["patient_id"]))
    parts = [f"{len(ids)} record ids (first {shown(ids.iat[0])})"] if len(ids) else []
    parts += [f"{patients} patient ids"] if patients else []
    return " and ".join(parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _normalise(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    frame = frame.copy()
    for col in ("id", "image_path", "source", "patient_id"):
        if col not in frame:
            raise RecordError(f"{origin}: required column {col!r} is missing")
    for col, dtype in CORE_COLUMNS.items():
        if col not in frame:
            frame[col] = np.nan if dtype == "float64" else ""
        if col in IDENTIFIERS:
            frame[col] = _identifiers(frame[col])
        elif dtype == "float64":
            frame[col] = _numbers(frame[col], col, origin)
        else:
            frame[col] = frame[col].astype(dtype)
        if dtype == "string":
            frame[col] = frame[col].fillna("")
    for row in np.flatnonzero((frame["patient_id"] == "").to_numpy()):
        raise RecordError(f"{origin}: data row {row + 1}: empty patient_id; splits and leakage checks are per patient")
    _check_values(frame, "view", VIEWS, origin)
    _check_values(frame, "sex", SEXES, origin)
    _check_values(frame, "split", SPLITS, origin)
    for row in np.flatnonzero((frame["id"] == "").to_numpy()):
        raise RecordError(f"{origin}: data row {row + 1}: empty id")
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise RecordError(f"{origin}: data row {row + 1}: id {shown(frame['id'].iat[row])} appears twice")
    for col in [c for c in frame.columns if c.startswith(LABEL_PREFIX)]:
        name = col[len(LABEL_PREFIX):]
        if name not in BY_NAME:
            raise RecordError(f"{origin}: column {col!r}: {name!r} is not a canonical finding "
                              f"({', '.join(FINDING_NAMES)})")
        values = pd.to_numeric(frame[col], errors="coerce").astype("float32")
        bad = ~(values.isna() | values.isin(LABEL_VALUES))
        bad |= values.isna() & frame[col].notna() & (frame[col].astype(str) != "nan")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise RecordError(f"{origin}: data row {row + 1}: {col}={shown(frame[col].iat[row])}; labels are 1, 0, -1 or empty")
        frame[col] = values
    for col in [c for c in frame.columns if c.startswith(MASK_PREFIX)]:
        frame[col] = frame[col].astype("string").fillna("")
    ordered = list(CORE_COLUMNS) + sorted(c for c in frame.columns if c not in CORE_COLUMNS)
    return frame[ordered].reset_index(drop=True)


def _identifiers(column: pd.Series) -> pd.Series:
    """Ids as strings, compared across tables: whole numbers as integers even where a gap made the column float
    (7.0 -> "7"), surrounding whitespace dropped (DICOM pads odd-length values with a space)."""
    if pd.api.types.is_float_dtype(column):
        known = column.dropna()
        if (known == known.round()).all():
            column = column.astype("Int64")
    return column.astype("string").str.strip()


def _numbers(column: pd.Series, name: str, origin: str) -> pd.Series:
    """A numeric column (age); a value that is not a number is an error naming its row."""
    values = pd.to_numeric(column.replace("", np.nan), errors="coerce").astype("float64")
    bad = values.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RecordError(f"{origin}: data row {row + 1}: {name}={shown(column.iat[row])} is not a number")
    return values


def _check_values(frame: pd.DataFrame, col: str, allowed: set[str], origin: str) -> None:
    bad = ~frame[col].isin(allowed)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RecordError(f"{origin}: data row {row + 1}: {col}={shown(frame[col].iat[row])}; allowed: {sorted(allowed)}")
