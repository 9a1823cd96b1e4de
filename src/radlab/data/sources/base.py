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
    # Files or folders (globs relative to ROOT) that mark this provider's layout: one present recognises it.
    markers: tuple[str, ...] = ()

    @staticmethod
    def trait(name: str, attribute: str) -> str:
        """A registered source's ``split_unit``/``image_origin``; the defaults for names no source registers
        (a manifest's own ``source`` values)."""
        return getattr(SOURCES.get(name) if name in SOURCES else Source, attribute)

    @classmethod
    def recognises(cls, root: Path) -> bool:
        """Whether ROOT holds this provider's layout (one of ``markers``)."""
        return any(next(Path(root).glob(marker), None) is not None for marker in cls.markers)

    def load(self, root: Path) -> RecordTable:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def require(path: Path) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"expected {path} in the provider's layout, but it is missing")
        return path


def detect_source(root: Path) -> str:
    """The one registered source whose layout ROOT holds; a clear error when none or several recognise it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: a source's layout cannot be recognised in it")
    found = [name for name in SOURCES.names() if SOURCES.get(name).recognises(root)]
    if not found:
        raise FileNotFoundError(f"{root} holds no layout a registered source recognises; name the source "
                                f"(`radlab list sources`) or write a manifest")
    if len(found) > 1:
        raise ValueError(f"{root} matches the layouts of several sources ({', '.join(found)}): name one")
    return found[0]
