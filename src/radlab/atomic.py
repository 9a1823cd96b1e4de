"""Atomic file and folder writes: a temporary in the same folder, made readable as the umask allows (tempfile's
are private to the owner), then renamed into place, the rename made durable."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


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


@contextlib.contextmanager
def writing(path: Path, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary handle on a temp file of this writer's own beside ``path`` (concurrent writers never share one),
    renamed to ``path`` when the block ends, removed when it raises; a reader sees the whole old file or the whole
    new one. ``durable``: the data and the rename are flushed to disk (they survive a power loss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            sync_folder(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    """``path.write_text(text)`` made atomic (``writing``)."""
    with writing(path) as handle:
        handle.write(text.encode())
    return path


def temp_folder(directory: Path) -> Path:
    """An empty folder beside ``directory`` to fill, then move with ``replace_folder``."""
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    tmp.chmod(0o777 & ~umask())
    return tmp


def sync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk, so a rename of ``folder`` that
    survives a power loss does not bring empty files with it."""
    for root, _, names in os.walk(folder):
        for name in names:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(Path(root))


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the
    platform or file system cannot, leaving both as they were."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(tmp: Path, directory: Path) -> None:
    """Put the filled ``tmp`` at ``directory``, its files flushed first. An existing ``directory`` is swapped
    with ``tmp`` in one step where the platform can (Linux), so no moment leaves neither; elsewhere, or where
    ``directory`` is a link, it is moved aside, then the new one moved in (a crash between the two leaves the
    old one under ``.NAME.old.*``). The old one is removed last."""
    sync_tree(tmp)
    if directory.is_dir() and not directory.is_symlink() and exchange(tmp, directory):
        sync_folder(directory.parent)
        shutil.rmtree(tmp)
        return
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
        directory.replace(old / directory.name)
    tmp.replace(directory)
    sync_folder(directory.parent)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder`` (``folder/.lock``, flock) across processes: one writer at a time; released
    when the holder exits, even by a crash."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
