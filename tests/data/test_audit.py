import io
import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data.audit import LeakageError, audit, exclude, near_pairs, refuse_overlap
from radlab.data.records import RecordTable


def _record(prefix: str, i: int, name: str, patient: str) -> dict:
    return {"id": f"{prefix}{i}", "image_path": name, "source": prefix, "patient_id": patient}


@pytest.fixture()
def planted(tmp_path):
    """A pre-training set of 10 images and an evaluation set of 6, with one exact duplicate (the same pixels
    as PNG and as 12-bit DICOM), one near duplicate (downsized, JPEG, dimmed) and one shared patient."""
    pre, ev = tmp_path / "pre", tmp_path / "eval"
    pretrain = [_record("s", i, fx.png(pre / f"s{i}.png", fx.radiograph(i)).name, f"pp{i}") for i in range(10)]
    fx.dicom(ev / "e0.dcm", fx.radiograph(4).astype(np.uint16) * 16, bits=12)
    buffer = io.BytesIO()
    Image.fromarray(fx.radiograph(5)).resize((192, 192)).save(buffer, "JPEG", quality=75)
    dimmed = np.clip(np.asarray(Image.open(buffer)) * 0.9 + 10, 0, 255).astype(np.uint8)
    fx.png(ev / "e1.png", dimmed)
    evaluation = [_record("e", 0, "e0.dcm", "q0"), _record("e", 1, "e1.png", "q1")]
    evaluation += [_record("e", i, fx.png(ev / f"e{i}.png", fx.radiograph(100 + i)).name,
                           "pp7" if i == 2 else f"q{i}") for i in range(2, 6)]
    return RecordTable.from_records(pretrain, pre), RecordTable.from_records(evaluation, ev)


def test_audit_finds_exactly_the_planted_overlaps(planted):
    pretrain, evaluation = planted
    report = audit(pretrain, {"eval": evaluation})
    (overlap,) = report.overlaps
    assert overlap.shared_patients == ["pp7"]
    assert overlap.exact_duplicates == [("s4", "e0")]
    assert [(a, b) for a, b, _ in overlap.near_duplicates] == [("s5", "e1")]
    cleaned = exclude(pretrain, report)
    assert sorted(set(pretrain.frame["id"]) - set(cleaned.frame["id"])) == ["s4", "s5", "s7"]
    assert audit(cleaned, {"eval": evaluation}).clean()


def test_refuse_overlap_unless_forced(planted, caplog):
    pretrain, evaluation = planted
    with pytest.raises(LeakageError, match=r"eval: 1 shared patients, 0 exact and 0 near-duplicate") as caught:
        refuse_overlap(pretrain, {"eval": evaluation})
    assert "--report FILE" in str(caught.value) and "pp7" not in str(caught.value)  # patient ids: counts only
    with pytest.raises(LeakageError, match="1 exact and 1 near-duplicate"):
        refuse_overlap(pretrain, {"eval": evaluation}, images=True)
    with caplog.at_level(logging.WARNING):
        report = refuse_overlap(pretrain, {"eval": evaluation}, force=True)
    assert not report.clean() and "forced" in caplog.text and "pp7" not in caplog.text
    assert report.overlaps[0].shared_patients == ["pp7"]
    assert refuse_overlap(pretrain.subset([0, 1]), {"eval": evaluation}).clean()


def test_audit_command_excludes(planted, tmp_path):
    pretrain, evaluation = planted
    pretrain.write(tmp_path / "pre_table")
    evaluation.write(tmp_path / "eval_table")
    result = CliRunner().invoke(app, ["data", "audit", str(tmp_path / "pre_table"), str(tmp_path / "eval_table"),
                                      "--exclude", str(tmp_path / "clean"), "--report", str(tmp_path / "audit.json")])
    assert result.exit_code == 0, result.output
    assert "1 shared patients, 1 exact and 1 near-duplicate images" in result.output
    assert len(RecordTable.read(tmp_path / "clean")) == 7
    assert json.loads((tmp_path / "audit.json").read_text())["overlaps"][0]["exact_duplicates"] == [["s4", "e0"]]


def test_near_pairs_blockwise():
    a = np.array([0b1111, 0, 2**63], dtype=np.uint64)
    b = np.array([0b0111, 2**63 + 1, 2**40 - 1], dtype=np.uint64)
    assert sorted(near_pairs(a, b, threshold=1, block=1)) == [(0, 0, 1), (2, 1, 1)]


def test_films_alike_in_outline_only_are_candidates_not_near_duplicates(tmp_path):
    """Another patient's film with the same outline (what the perceptual hash sees) and its own fine structure
    is listed as a candidate with its correlation, not flagged; an unreadable image is counted, not a crash."""
    pre = [_record("s", i, fx.png(tmp_path / f"s{i}.png", fx.radiograph(i)).name, f"pp{i}") for i in range(3)]
    alike = fx.png(tmp_path / "alike.png", fx.radiograph(2, texture_seed=77))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    ev = [_record("e", 0, alike.name, "q0"), _record("e", 1, "broken.png", "q1")]
    report = audit(RecordTable.from_records(pre, tmp_path), {"eval": RecordTable.from_records(ev, tmp_path)})
    (overlap,) = report.overlaps
    assert report.clean() and overlap.near_duplicates == [] and overlap.unreadable == ["e1"]
    ((a, b, bits, r),) = overlap.near_candidates
    assert (a, b) == ("s2", "e0") and bits <= report.threshold and r < report.min_correlation


def test_phantoms_of_different_patients_are_not_near_duplicates_and_copies_are(phantom_dir, tmp_path):
    """Phantoms share one outline (the perceptual hash alone flagged 97 pairs of different patients here); the
    detail keeps them apart and still finds every upscaled JPEG copy of a training image."""
    import pandas as pd

    from radlab.data.splits import assign_splits

    table = assign_splits(RecordTable.read(phantom_dir), seed=0)
    train, test = table.split("train"), table.split("test")
    copies = []
    for k in range(10):
        path = tmp_path / f"copy{k}.jpg"
        Image.open(train.image_path(k)).convert("L").resize((128, 128), Image.Resampling.BICUBIC).save(path, quality=90)
        copies.append({"id": f"copy{k}", "image_path": str(path), "source": "phantom", "patient_id": f"C{k}"})
    frame = pd.concat([test.with_absolute_paths().frame, pd.DataFrame(copies)], ignore_index=True)
    (overlap,) = audit(train, {"test": RecordTable(frame, tmp_path)}).overlaps
    flagged = {b for _, b, _ in overlap.near_duplicates} | {b for _, b in overlap.exact_duplicates}
    assert flagged == {f"copy{k}" for k in range(10)}
    assert overlap.near_candidates and all(r < 0.95 for *_, r in overlap.near_candidates)
