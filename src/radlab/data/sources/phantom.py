"""Synthetic phantoms written by ``radlab data synth``."""

from __future__ import annotations

from pathlib import Path

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source


@SOURCES.register("phantom", "synthetic chest X-ray phantoms from `radlab data synth` (records.parquet)")
class PhantomSource(Source):
    name = "phantom"

    def load(self, root: Path) -> RecordTable:
        return RecordTable.read(self.require(Path(root) / "records.parquet"))
