"""Synthetic phantoms written by ``radlab data synth``: a record table (``table``) under their own name."""

from __future__ import annotations

from radlab.data.sources.base import SOURCES
from radlab.data.sources.table import TableSource


@SOURCES.register("phantom", "synthetic chest X-ray phantoms from `radlab data synth` (records.parquet)")
class PhantomSource(TableSource):
    name = "phantom"
    markers = ()  # a phantom folder is a record table: `table` recognises it
