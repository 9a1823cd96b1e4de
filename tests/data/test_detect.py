"""Recognising a provider's layout: `auto` as a source name, and the bundled data read without a list of folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data import fixtures as fx
from data.test_sources_contract import CASES, LAYOUTS
from radlab.cli import app
from radlab.data.bundled import bundled_sources, load_bundled
from radlab.data.loading import load_tables
from radlab.data.records import RecordTable
from radlab.data.sources import detect_source

ALL_LAYOUTS = {**{case: (case, build) for case, build in CASES.items()}, **LAYOUTS}


@pytest.mark.parametrize("case", sorted(ALL_LAYOUTS))
def test_each_provider_layout_is_recognised_as_its_source_alone(case: str, tmp_path: Path) -> None:
    name, build = ALL_LAYOUTS[case]
    assert detect_source(build(tmp_path / case)) == name


def test_a_phantom_folder_reads_as_a_record_table_and_keeps_its_source(phantom_dir: Path) -> None:
    assert detect_source(phantom_dir) == "table"
    auto = load_tables([("auto", str(phantom_dir))], {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0).frame
    named = load_tables([("phantom", str(phantom_dir))], {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0).frame
    assert (auto["source"] == "phantom").all()
    assert auto.equals(named)


def test_auto_loads_what_the_named_source_loads(tmp_path: Path) -> None:
    root = fx.build_nih_sample(tmp_path / "nih_sample")
    fractions = {"train": 0.5, "test": 0.5}
    assert load_tables([("auto", str(root))], fractions, 0).frame.equals(load_tables([("nih", str(root))], fractions, 0).frame)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00binary", b"Path,Sex\nx.jpg,Male\n"])
def test_a_train_csv_that_is_not_vindrs_does_not_hide_the_layout(content: bytes, tmp_path: Path) -> None:
    root = fx.build_nih_sample(tmp_path / "nih")
    (root / "train.csv").write_bytes(content)
    assert detect_source(root) == "nih"


def test_unknown_and_ambiguous_folders_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no layout a registered source recognises"):
        detect_source(tmp_path / "empty")
    both = fx.build_nih_sample(tmp_path / "both")
    (both / "indiana_reports.csv").write_text("uid,MeSH\n")
    with pytest.raises(ValueError, match=r"several sources \(iu_xray, nih\): name one"):
        detect_source(both)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        detect_source(both / "sample_labels.csv")


def test_bundled_folders_are_found_by_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    fx.build_nih_sample(root / "nih_sample_images")
    fx.build_montgomery(root / "MontgomerySet")
    (root / "notes").mkdir()
    with caplog.at_level(logging.WARNING, logger="radlab.data.bundled"):
        assert bundled_sources(root) == {"MontgomerySet": "montgomery", "nih_sample_images": "nih"}
    assert "1 folder(s) left out" in caplog.text and "notes" in caplog.text
    tables = load_bundled(root)
    assert set(tables) == {"MontgomerySet", "nih_sample_images"}
    assert (tables["nih_sample_images"].frame["source"] == "nih").all()


def test_import_auto_names_the_layout_it_found(tmp_path: Path) -> None:
    root = fx.build_nih_sample(tmp_path / "nih_sample")
    result = CliRunner().invoke(app, ["data", "import", "auto", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "nih layout" in result.output and "4 records" in result.output
    assert len(RecordTable.read(tmp_path / "out").frame) == 4
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["data", "import", "auto", str(tmp_path / "empty"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "error:" in result.output and "holds no layout" in result.output
