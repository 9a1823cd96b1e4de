"""Finding the bundled real data (``--data`` or ``RADLAB_DATA``) and loading each folder through the source
whose layout it holds, so a folder added there is read without a code change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from radlab.data.records import RecordTable
from radlab.data.sources import SOURCES, detect_source

ENV_VAR = "RADLAB_DATA"
log = logging.getLogger(__name__)


def data_root(path: Path | str | None = None) -> Path:
    """The bundled data folder: the given path, else $RADLAB_DATA; a clear error when neither exists."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        raise FileNotFoundError(f"no data folder given: pass --data or set {ENV_VAR}")
    root = Path(chosen)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    return root


def bundled_sources(root: Path | str | None = None) -> dict[str, str]:
    """Folder name -> the source whose layout it holds, for every folder under the data root; folders in no
    known layout (or in several) are logged and left out, with a count."""
    root = data_root(root)
    found, unknown = {}, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            found[folder.name] = detect_source(folder)
        except (FileNotFoundError, ValueError) as err:
            unknown.append(folder.name)
            log.warning("bundled data: %s", err)
    if unknown:
        log.warning("bundled data: %d folder(s) left out, in no single known layout: %s", len(unknown), unknown)
    return found


def load_bundled(root: Path | str | None = None) -> dict[str, RecordTable]:
    """Every recognised folder under the data root, loaded through its source."""
    root = data_root(root)
    return {folder: SOURCES.build(source).load(root / folder) for folder, source in bundled_sources(root).items()}
