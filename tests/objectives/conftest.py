"""Fixtures of the objective tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from radlab.data.records import RecordTable


@pytest.fixture(scope="module")
def phantoms_with_label_only(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 phantom training records, a quarter without their report (label-only samples)."""
    table = RecordTable.read(phantom_dir).with_absolute_paths()
    frame = table.frame.iloc[100:116].reset_index(drop=True).copy()
    frame["split"] = "train"
    frame.loc[frame.index % 4 == 3, ["report", "findings", "impression"]] = ""
    return RecordTable(frame, table.root).write(tmp_path_factory.mktemp("label_only")).parent
