"""A record table radlab wrote: ``records.parquet`` from ``radlab data import``, ``data check --drop``, ``data audit
--exclude`` (or a ``.parquet`` file of the same form). Records keep the ``source`` they were imported from, so
leakage checks and subgroups by source see the provider, not this loader."""

from __future__ import annotations

from pathlib import Path

from radlab.data.records import TABLE_FILE, RecordTable
from radlab.data.sources.base import SOURCES, Source


@SOURCES.register("table", "a record table radlab wrote (records.parquet: data import, check --drop, audit --exclude)")
class TableSource(Source):
    name = "table"
    markers = (TABLE_FILE,)

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        return RecordTable.read(self.require(root if root.suffix == ".parquet" else root / TABLE_FILE))
