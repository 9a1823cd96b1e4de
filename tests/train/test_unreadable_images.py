"""Image files that cannot be read: a named error by default; with data.unreadable_images=skip the next readable
record stands in, counted in the metrics, and a resumed run replaces exactly as the original did."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import interrupted_copy, tiny_config

from radlab.data.dataset import Collator, RecordDataset
from radlab.data.records import RecordTable
from radlab.models.towers import Preprocess
from radlab.train.engine import pretrain
from run_logs import logged

BAD_ROWS = (3, 4)  # neighbours: the row after the first bad one is bad too


def with_unreadable_images(phantoms: Path, out: Path) -> Path:
    """A copy of a phantom table and its images in which row 3 is not an image and row 4 a truncated PNG."""
    table = RecordTable.read(phantoms)
    (out / "images").mkdir(parents=True)
    frame = table.frame.copy()
    for i in range(len(frame)):
        target = out / "images" / f"{frame['id'].iat[i]}.png"
        shutil.copy(table.image_path(i), target)
        frame.loc[frame.index[i], "image_path"] = str(target)
    first, second = (out / "images" / f"{frame['id'].iat[r]}.png" for r in BAD_ROWS)
    first.write_text("not an image")
    second.write_bytes(second.read_bytes()[:200])
    RecordTable(frame, out).write(out)
    return out


@pytest.fixture(scope="module")
def damaged(phantom16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_unreadable_images(phantom16, tmp_path_factory.mktemp("damaged"))


def test_an_unreadable_image_is_an_error_naming_record_and_file(damaged: Path) -> None:
    table = RecordTable.read(damaged)
    dataset = RecordDataset(table, Preprocess(image_size=32))
    assert dataset[2]["index"] == 2
    with pytest.raises(OSError, match=rf"^record '{table.frame['id'].iat[3]}': .*{table.frame['id'].iat[3]}"
                                      r"\.png: cannot read image.*radlab data check.*data\.unreadable_images=skip"):
        dataset[3]


def test_skipping_stands_the_next_readable_record_in(damaged: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = RecordTable.read(damaged)
    dataset = RecordDataset(table, Preprocess(image_size=32), skip_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="radlab.data.dataset"):
        samples = [dataset[i] for i in (2, 3, 4, 5, 3)]
    assert [s["index"] for s in samples] == [2, 5, 5, 5, 5]
    assert [s["replaced"] for s in samples] == [False, True, True, False, True]
    assert torch.equal(samples[1]["image"], samples[3]["image"]) and samples[1]["text"] == samples[3]["text"]
    warned = [r.getMessage() for r in caplog.records]
    ids = table.frame["id"]
    assert len(warned) == 2 and f"record {ids.iat[3]!r}" in warned[0] and f"record {ids.iat[4]!r}" in warned[1], \
        "each file logged once"
    assert int(Collator()(samples)["replaced"]) == 3


def test_pretraining_skips_counts_and_resumes_the_same_replacements(damaged: Path, tmp_path: Path) -> None:
    extra = ["optim.steps=4", "optim.batch_size=8", "checkpoint={every: 2, keep_last: 3}"]
    ids = RecordTable.read(damaged).frame["id"]
    with pytest.raises(OSError, match=f"^record '({ids.iat[3]}|{ids.iat[4]})': "):
        pretrain(tiny_config("simclr", damaged, tmp_path / "error", *extra), progress=False)
    skip = [*extra, "data.unreadable_images=skip"]
    straight = pretrain(tiny_config("simclr", damaged, tmp_path / "a", *skip), progress=False)
    replaced = [r["replaced_images"] for r in logged(tmp_path / "a")]
    assert replaced == sorted(replaced) and replaced[-1] == 2 * len(BAD_ROWS), "two epochs of 16 records"
    resumed_out = interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    resumed = pretrain(tiny_config("simclr", damaged, resumed_out, *skip, "resume=true"), progress=False)
    assert [r["replaced_images"] for r in logged(resumed_out)] == replaced[2:]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
