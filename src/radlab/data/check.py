"""Every image file of a record table read once, to list the ones that cannot be read before a long run (or a
cache build, or an audit) meets them one at a time: not an image, truncated, an undecodable DICOM, missing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from radlab.data.images import read_image
from radlab.data.records import RecordTable
from radlab.progress import tracked


@dataclass(frozen=True)
class Unreadable:
    """One image that cannot be read: its table row (0-based index), record id, file and what went wrong."""

    row: int
    record: str
    path: str
    problem: str

    @property
    def data_row(self) -> int:
        """The row as users see it, 1-based with the header not counted: the "data row N" of import errors."""
        return self.row + 1


class _ReadJob(Dataset):
    """Worker job: decode one image in full; the problem, or "" when it reads."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str]:
        try:
            read_image(self.paths[i])
        except OSError as err:
            return i, str(err)
        return i, ""


def unreadable_images(table: RecordTable, workers: int = 0) -> list[Unreadable]:
    """The image records of ``table`` whose file cannot be read, in row order (text-only records are not
    images and are left alone)."""
    rows = np.flatnonzero(table.has_images())
    paths = [table.image_path(int(i)) for i in rows]
    loader = DataLoader(_ReadJob(paths), batch_size=None, num_workers=workers,
                        prefetch_factor=8 if workers else None)
    ids = table.frame["id"].to_numpy()
    found = [Unreadable(int(rows[i]), str(ids[rows[i]]), str(paths[i]), problem)
             for i, problem in tracked(loader, len(paths), f"reading {len(paths)} images") if problem]
    return sorted(found, key=lambda u: u.row)


def write_unreadable(found: list[Unreadable], path: Path | str) -> Path:
    """The list as CSV (data_row: 1-based, as ``data row N`` in messages; record, path, problem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["data_row", "record", "path", "problem"])
        writer.writeheader()
        writer.writerows({"data_row": u.data_row, "record": u.record, "path": u.path, "problem": u.problem}
                         for u in found)
    return path


def without_unreadable(table: RecordTable, found: list[Unreadable]) -> RecordTable:
    """``table`` without the records in ``found``."""
    keep = np.ones(len(table), dtype=bool)
    keep[[u.row for u in found]] = False
    return table.subset(keep)
