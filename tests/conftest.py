"""Shared fixtures: the bundled real data (skipped with a reason when absent) and a small phantom set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from radlab.data.records import RecordTable

# Tiny models train faster on one intra-op thread than on two, and do not slow down on a busy machine.
torch.set_num_threads(1)


def _bundled_root() -> Path | None:
    candidates = [os.environ.get("RADLAB_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The bundled real data folder (../shared/data or $RADLAB_DATA)."""
    root = _bundled_root()
    if root is None:
        pytest.skip("bundled real data not found: set RADLAB_DATA or place shared/data beside the checkout")
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 phantom images at 64 px (about 150 patients), drawn once per test session."""
    from radlab.data.phantoms import synthesize

    out = tmp_path_factory.mktemp("phantoms")
    synthesize(out, n=400, size=64, seed=0)
    return out


@pytest.fixture(scope="session")
def phantom_table(phantom_dir: Path) -> RecordTable:
    return RecordTable.read(phantom_dir)
