"""The source contract: a provider's native layout on disk becomes a validated record table."""

from __future__ import annotations

from pathlib import Path

from radlab.data.records import RecordTable
from radlab.registry import Registry

SOURCES: Registry = Registry("source")


class Source:
    """One provider's layout. Subclasses set ``name`` and ``label_map`` (native label -> canonical finding,
    kept visible in the module) and implement ``load``, which must not invent labels: a finding the
    source does not annotate stays NaN."""

    name: str = ""
    label_map: dict[str, str] = {}
    # "patient" (default): the provider's split, where given, is patient-level and checked to be. "question":
    # the official split is by question and shares images between train and test (VQA-RAD); it is kept as
    # the benchmark defines it, outside the patient-level checks, with a logged count of shared images.
    split_unit: str = "patient"
    # The source whose images this set re-encodes under its own ids (RSNA Pneumonia and SIIM-ACR: NIH
    # ChestX-ray14). Patient ids cannot reveal overlap between such sets; an image audit can.
    image_origin: str = ""

    @staticmethod
    def trait(name: str, attribute: str) -> str:
        """A registered source's ``split_unit``/``image_origin``; the defaults for names no source registers
        (a manifest's own ``source`` values)."""
        return getattr(SOURCES.get(name) if name in SOURCES else Source, attribute)

    def load(self, root: Path) -> RecordTable:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def require(path: Path) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"expected {path} in the provider's layout, but it is missing")
        return path
