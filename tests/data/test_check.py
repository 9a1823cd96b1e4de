"""`radlab data check`: every image read once; unreadable ones listed with data row, record and problem, or
dropped."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data.cache import build_cache
from radlab.data.check import unreadable_images
from radlab.data.images import read_image
from radlab.data.records import RecordTable

BAD = {1: "truncated DICOM", 4: "not an image", 7: "truncated PNG", 9: "missing"}


@pytest.fixture()
def damaged(tmp_path: Path) -> Path:
    """fx.image_table's 12 images (row 1 a DICOM) with the rows of ``BAD`` damaged, written as a table."""
    table = fx.image_table(tmp_path / "images")
    paths = {row: table.image_path(row) for row in BAD}
    paths[1].write_bytes(paths[1].read_bytes()[:-600])
    paths[4].write_text("not an image")
    paths[7].write_bytes(paths[7].read_bytes()[:120])
    paths[9].unlink()
    return table.write(tmp_path / "table")


@pytest.mark.parametrize("workers", [0, 2])
def test_every_unreadable_image_is_found_in_row_order(damaged: Path, workers: int) -> None:
    table = RecordTable.read(damaged)
    found = unreadable_images(table, workers)
    assert [u.row for u in found] == sorted(BAD)
    assert [u.record for u in found] == [table.frame["id"].iat[r] for r in sorted(BAD)]
    assert all(u.path.endswith(Path(table.image_path(u.row)).name) and u.problem for u in found)
    assert "DICOM" in found[0].problem or "pixel data" in found[0].problem


def test_cli_lists_them_exits_1_and_drops_them_on_request(damaged: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["data", "check", str(damaged), "--report", str(tmp_path / "bad.csv")])
    assert listed.exit_code == 1, listed.output
    assert "4 of 12 images cannot be read" in listed.output
    assert "  data row 5 (record 's4'):" in listed.output, "1-based, as import's errors count a manifest's rows"
    with (tmp_path / "bad.csv").open() as handle:
        assert [int(r["data_row"]) for r in csv.DictReader(handle)] == [row + 1 for row in sorted(BAD)]
    dropped = runner.invoke(app, ["data", "check", str(damaged), "--drop", str(tmp_path / "clean")])
    assert dropped.exit_code == 0, dropped.output
    clean = RecordTable.read(tmp_path / "clean")
    assert len(clean) == 8 and not set(clean.frame["id"]) & {f"s{r}" for r in BAD}
    assert all(read_image(clean.image_path(i)).size for i in range(len(clean)))
    again = runner.invoke(app, ["data", "check", str(tmp_path / "clean"), "--report", str(tmp_path / "bad.csv")])
    assert again.exit_code == 0, again.output
    with (tmp_path / "bad.csv").open() as handle:
        assert list(csv.DictReader(handle)) == [], "the clean table's report replaces the earlier list"


def test_a_cache_build_that_meets_one_points_to_the_check(damaged: Path, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="radlab data check"):
        build_cache(RecordTable.read(damaged), tmp_path / "cache", size=16)
