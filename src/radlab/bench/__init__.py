"""Helpers for the scripts in ``benchmarks/``: timing and side-by-side ratio tables."""

from radlab.bench.timing import Measurement, measure, ratio_table

__all__ = ["Measurement", "measure", "ratio_table"]
