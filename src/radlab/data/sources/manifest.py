"""A generic manifest: a CSV or JSON-lines file whose columns are record-table columns.

ROOT is the manifest file, or a folder holding ``manifest.csv`` or ``manifest.jsonl``; relative paths
resolve against the manifest's folder. Required: ``image_path`` (empty for a text-only record) and
``patient_id``. Optional: every other core column (``id`` defaults to the image path, or ``row<N>`` for a
text-only record; ``source`` to "manifest"), ``label_<finding>`` columns in the canonical taxonomy (1, 0,
-1, empty = not annotated), ``mask_<structure>`` paths, and any extra column, kept as is. Values are
validated, not guessed: a view of "lateral" is an error naming the row, not a silent ''. Patient ids are
taken as given; a manifest merged with other sources needs ids of its own (e.g. a site prefix). A row without
``report`` text gets one from its ``findings`` and ``impression`` ("FINDINGS: ... IMPRESSION: ...", as the
provider sources write it). A patient's rows that name different splits are an error naming the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
from radlab.data.reports import full_report
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import SourceFormatError, bad_row, finish

LABEL_MAP: dict[str, str] = {}  # columns are already canonical (label_<finding>)
FILES = ("manifest.csv", "manifest.jsonl")


def read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceFormatError(f"{path}: line {line_number + 1}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise SourceFormatError(f"{path}: line {line_number + 1}: expected a JSON object")
            rows.append(row)
    return pd.DataFrame(rows)


def compose_reports(frame: pd.DataFrame) -> None:
    """Fill an empty ``report`` from the row's ``findings`` and ``impression`` (``full_report``), in place."""
    if "findings" not in frame and "impression" not in frame:
        return
    text = {c: frame[c].fillna("").astype(str).str.strip() if c in frame else pd.Series("", index=frame.index)
            for c in ("findings", "impression", "report")}
    composed = pd.Series([full_report(f, i) for f, i in zip(text["findings"], text["impression"], strict=True)],
                         index=frame.index)
    frame["report"] = frame["report"].where(text["report"] != "", composed) if "report" in frame else composed


def check_patient_splits(table: RecordTable, path: Path) -> None:
    """Raise if a patient's rows name different splits (splits and leakage checks are per patient). The message
    names data rows, not the patient: ids can come from DICOM PatientID."""
    frame = table.frame
    given = frame[(frame["split"] != "") & (frame["source"].map(lambda s: Source.trait(s, "split_unit")) != "question")]
    per_patient = given.groupby("patient_id", sort=False)["split"].nunique()
    conflicting = per_patient.index[per_patient > 1]
    if not len(conflicting):
        return
    rows = given[given["patient_id"] == conflicting[0]].drop_duplicates("split")
    first, second = (f"{int(row) + 1} ({split})" for row, split in list(rows["split"].items())[:2])
    others = f" (and {len(conflicting) - 1} more patients)" if len(conflicting) > 1 else ""
    raise SourceFormatError(
        f"{path}: data rows {first} and {second} are one patient's records in different splits{others}; a "
        "patient's records share one split: fix the split column, or leave it empty for that patient's rows so "
        "its split is drawn per patient")


@SOURCES.register("manifest", "generic CSV/JSONL manifest with record-table columns (image_path, patient_id, label_*)")
class ManifestSource(Source):
    name = "manifest"
    markers = FILES
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        path = next((root / f for f in FILES if (root / f).exists()), root / FILES[0]) if root.is_dir() else root
        self.require(path)
        if path.suffix == ".jsonl":
            frame = read_jsonl(path)
        else:
            try:
                frame = pd.read_csv(path, dtype={"id": str, "patient_id": str, "study_id": str, "image_path": str},
                                    keep_default_na=False, na_values={c: [""] for c in ("age",)})
            except (pd.errors.ParserError, ValueError) as err:
                raise SourceFormatError(f"{path}: cannot read as CSV ({err})") from err
        missing = [c for c in ("image_path", "patient_id") if c not in frame]
        if missing:
            raise SourceFormatError(f"{path}: missing column(s) {missing}")
        frame["image_path"] = frame["image_path"].fillna("").astype(str)
        for row in frame.index[frame["patient_id"].fillna("").astype(str).str.strip() == ""]:
            raise bad_row(path, int(row), "empty patient_id")
        if "id" not in frame:  # the image path, or the row for a text-only record
            frame["id"] = [path_ or f"row{n + 1}" for n, path_ in enumerate(frame["image_path"])]
        if "source" not in frame:
            frame["source"] = self.name
        for column in [c for c in frame.columns if c.startswith("label_")]:
            frame[column] = frame[column].replace("", float("nan"))
        compose_reports(frame)
        table = finish(frame.to_dict("records"), path.parent, str(path))
        check_patient_splits(table, path)
        return table
