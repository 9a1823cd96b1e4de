"""Finding the bundled real data (``--data`` or ``RADLAB_DATA``) and loading each folder through its source."""

from __future__ import annotations

import os
from pathlib import Path

from radlab.data.records import RecordTable
from radlab.data.sources import SOURCES

ENV_VAR = "RADLAB_DATA"
BUNDLED_FOLDERS: dict[str, str] = {
    "iu_xray_reports": "iu_xray",
}


def data_root(path: Path | str | None = None) -> Path:
    """The bundled data folder: the given path, else $RADLAB_DATA; a clear error when neither exists."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        raise FileNotFoundError(f"no data folder given: pass --data or set {ENV_VAR}")
    root = Path(chosen)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    return root


def load_bundled(root: Path | str | None = None) -> dict[str, RecordTable]:
    """Every known folder under the data root, loaded through its registered source."""
    root = data_root(root)
    return {
        folder: SOURCES.build(source).load(root / folder)
        for folder, source in BUNDLED_FOLDERS.items()
        if (root / folder).is_dir()
    }
