"""A generic manifest: a CSV or JSON-lines file whose columns are record-table columns.

ROOT is the manifest file, or a folder holding ``manifest.csv`` or ``manifest.jsonl``; relative paths
resolve against the manifest's folder. Required: ``image_path`` (empty for a text-only record) and
``patient_id``. Optional: every other core column (``id`` defaults to the image path, or ``row<N>`` for a
text-only record; ``source`` to "manifest"), ``label_<finding>`` columns in the canonical taxonomy (1, 0,
-1, empty = not annotated), ``mask_<structure>`` paths, and any extra column, kept as is. Values are
validated, not guessed: a view of "lateral" is an error naming the row, not a silent ''. Patient ids are
taken as given; a manifest merged with other sources needs ids of its own (e.g. a site prefix).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from radlab.data.records import RecordTable
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
        return finish(frame.to_dict("records"), path.parent, str(path))
