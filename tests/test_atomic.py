"""Checkpoint folders are replaced in one step where the platform can, their files flushed before; single files are
written through a temp file of each writer's own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from radlab import atomic
from radlab.atomic import exchange, replace_folder, temp_folder


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights").write_text(text)
    (path / "sub").mkdir(exist_ok=True)
    (path / "sub" / "spec").write_text(text)
    return path


def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")
    if not exchange(a, b):
        pytest.skip("this platform or file system has no renameat2 RENAME_EXCHANGE: replace_folder renames twice")
    assert (a / "weights").read_text() == "B" and (b / "weights").read_text() == "A"


def test_an_existing_folder_is_swapped_never_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _folder(tmp_path / "checkpoint", "old")
    if not exchange(_folder(tmp_path / "x", "x"), _folder(tmp_path / "y", "y")):
        pytest.skip("no RENAME_EXCHANGE here")

    def no_two_step_rename(self: Path, other: Path) -> None:
        raise AssertionError(f"{self} renamed to {other}: a window with neither folder")

    monkeypatch.setattr(Path, "replace", no_two_step_rename)
    replace_folder(_folder(temp_folder(target), "new"), target)
    assert (target / "weights").read_text() == "new" and (target / "sub" / "spec").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "x", "y"]


def test_without_exchange_the_folder_is_still_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    target = _folder(tmp_path / "checkpoint", "old")
    replace_folder(_folder(temp_folder(target), "new"), target)
    assert (target / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["checkpoint"]
    replace_folder(_folder(temp_folder(tmp_path / "fresh"), "first"), tmp_path / "fresh")
    assert (tmp_path / "fresh" / "weights").read_text() == "first"


def test_a_linked_folder_is_replaced_by_the_new_folder(tmp_path: Path) -> None:
    real = _folder(tmp_path / "real", "old")
    (tmp_path / "checkpoint").symlink_to(real)
    replace_folder(_folder(temp_folder(tmp_path / "checkpoint"), "new"), tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "weights").read_text() == "new" and not (tmp_path / "checkpoint").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "real"]


def test_every_file_is_flushed_before_the_folder_moves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc to name the flushed files")
    monkeypatch.setattr(os, "fsync", recording_fsync)
    tmp = _folder(temp_folder(tmp_path / "checkpoint"), "new")
    replace_folder(tmp, tmp_path / "checkpoint")
    assert {str(tmp / "weights"), str(tmp / "sub" / "spec")} <= set(flushed)


def test_a_file_written_in_place_is_whole_or_not_there(tmp_path: Path) -> None:
    path = atomic.write_text(tmp_path / "sub" / "results.json", "old")
    with pytest.raises(RuntimeError), atomic.writing(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_two_writers_of_one_file_never_share_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "features.npy"
    with atomic.writing(path) as first, atomic.writing(path) as second:
        first.write(b"first")
        second.write(b"second")
    assert path.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["features.npy"]


def test_a_written_file_is_as_readable_as_the_umask_says(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        path = atomic.write_text(tmp_path / "store.jsonl", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_durable_write_flushes_the_file_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd))[1])
    with atomic.writing(tmp_path / "step.pt") as handle:
        handle.write(b"x")
    assert not flushed
    with atomic.writing(tmp_path / "step.pt", durable=True) as handle:
        handle.write(b"y")
    assert len(flushed) == 2 and (tmp_path / "step.pt").read_bytes() == b"y"  # the file, then its folder
