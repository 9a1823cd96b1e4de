"""Loading the record tables a config names, merged, with patient-level splits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from radlab.data.bundled import ENV_VAR
from radlab.data.records import RecordTable
from radlab.data.sources import SOURCES, detect_source
from radlab.data.splits import assign_splits

AUTO = "auto"  # as a source name: the registered source whose layout the folder holds


def resolve_data_path(path: str, data_root: str | None = None) -> Path:
    """A path as given, else under the data root (``data_root`` or $RADLAB_DATA)."""
    direct = Path(path)
    if direct.exists():
        return direct
    root = data_root or os.environ.get(ENV_VAR)
    if root and (Path(root) / path).exists():
        return Path(root) / path
    raise FileNotFoundError(f"data path {path!r} not found (also looked under {root or f'${ENV_VAR} (unset)'})")


def load_source(name: str, path: Path) -> RecordTable:
    """One folder's records through the named source, or through the one whose layout it holds (``auto``)."""
    return SOURCES.build(detect_source(path) if name == AUTO else name).load(path)


def parse_sources(items: Sequence[str]) -> list[tuple[str, str]]:
    """``SOURCE:PATH`` strings (as the CLIs take them; ``auto:PATH`` recognises the layout) -> (source name,
    path) pairs; a clear error otherwise."""
    pairs = []
    for item in items:
        name, _, path = item.partition(":")
        if not name or not path:
            raise ValueError(f"{item!r}: expected SOURCE:PATH, e.g. phantom:runs/demo/phantoms")
        pairs.append((name, path))
    return pairs


def load_tables(sources: list[tuple[str, str]], fractions: dict[str, float], seed: int,
                data_root: str | None = None) -> RecordTable:
    """Load each (source name, path), merge them, and draw patient-level splits where none are given. Sources
    must not share record or patient ids (an error names both sources, as ``SOURCE:PATH``)."""
    tables = [load_source(name, resolve_data_path(path, data_root)) for name, path in sources]
    names = [f"{name}:{path}" for name, path in sources]
    merged = tables[0] if len(tables) == 1 else RecordTable.concat(tables, names)
    return assign_splits(merged, fractions, seed)
