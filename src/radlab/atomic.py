"""Atomic file and folder writes: a temporary in the same folder, made readable as the umask allows (tempfile's
are private to the owner), then renamed into place, the rename made durable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sync_folder(folder: Path) -> None:
    """Make the renames inside ``folder`` survive a power loss (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_folder(directory: Path) -> Path:
    """An empty folder beside ``directory`` to fill, then move with ``replace_folder``."""
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    tmp.chmod(0o777 & ~umask())
    return tmp


def replace_folder(tmp: Path, directory: Path) -> None:
    """Put the filled ``tmp`` at ``directory``; an existing one is moved aside first and removed last, so a
    crash leaves the old folder or the new one, never neither."""
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
        directory.replace(old / directory.name)
    tmp.replace(directory)
    sync_folder(directory.parent)
    if old is not None:
        shutil.rmtree(old)
