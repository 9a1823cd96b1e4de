"""Small phantom sets for engine tests: a subset of the session's phantoms, all in the train split."""

from __future__ import annotations

from pathlib import Path

import pytest

from radlab.data.records import RecordTable


def phantom_subset(phantom_dir: Path, out: Path, n: int) -> Path:
    table = RecordTable.read(phantom_dir).with_absolute_paths()
    frame = table.frame.iloc[:n].reset_index(drop=True).copy()
    frame["split"] = "train"
    RecordTable(frame, table.root).write(out)
    return out


@pytest.fixture(scope="session")
def phantom16(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 phantom records, all for training (one epoch = a few steps, so resumes cross epoch boundaries)."""
    return phantom_subset(phantom_dir, tmp_path_factory.mktemp("phantom16"), 16)
