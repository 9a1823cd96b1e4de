"""Checkpoint folders are replaced in one step where the platform can, their files flushed before."""

from __future__ import annotations

import os
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
