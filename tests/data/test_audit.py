import io
import json
import logging
import tempfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data import audit as audit_module
from radlab.data.audit import ImageHashes, LeakageError, audit, exclude, near_matches, refuse_overlap
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


def _hashes(prefix: str, phash: list[int], details: np.ndarray, exact: list[str] | None = None) -> ImageHashes:
    """Synthetic audit rows: ids ``prefix0``..., distinct exact digests unless given, vectors normalised."""
    ids = [f"{prefix}{k}" for k in range(len(phash))]
    details = details / np.linalg.norm(details, axis=1, keepdims=True)
    return ImageHashes(ids, exact or ids, np.array(phash, np.uint64), details.astype(np.float16), [])


def test_near_matches_blockwise():
    """Block sizes 1 and 2048 settle the same pairs; an exact duplicate within the threshold is left out."""
    rng = np.random.default_rng(0)
    va, noise = rng.normal(size=(3, 4096)), rng.normal(size=(4, 4096))
    a = _hashes("a", [0b1111, 0, 2**63], va, ["x", "same", "y"])
    b = _hashes("b", [0b0111, 2**63 + 1, 2**40 - 1, 1], np.stack([va[0] + 0.01 * noise[0], *noise[1:]]),
                ["p", "q", "r", "same"])
    small, large = (near_matches(a, b, threshold=1, block=block) for block in (1, 2048))
    assert (small.duplicates, small.total, small.candidate_rows) == (large.duplicates, large.total,
                                                                     large.candidate_rows)
    assert small.candidates == [(*c[:3], pytest.approx(c[3], abs=1e-6)) for c in large.candidates]
    assert small.duplicates == [(0, 0, 1)] and small.total == 1 and small.candidate_rows == [1]
    ((i, j, bits, r),) = small.candidates
    assert (i, j, bits) == (2, 1, 1) and abs(r) < 0.1


def _reference(a: ImageHashes, b: ImageHashes, threshold: int, min_correlation: float = 0.95) -> tuple[list, list]:
    """Every pair within ``threshold`` bits, exact duplicates left out, by brute force: (duplicates, candidates)."""
    duplicates, candidates = [], []
    for i in range(len(a.ids)):
        for j in range(len(b.ids)):
            bits = bin(int(a.phash[i]) ^ int(b.phash[j])).count("1")
            if bits > threshold or a.exact[i] == b.exact[j]:
                continue
            r = float(np.dot(a.details[i].astype(np.float64), b.details[j].astype(np.float64)))
            (duplicates.append((i, j, bits)) if r >= min_correlation else candidates.append((i, j, bits, r)))
    return duplicates, candidates


def _random_set(seed: int, n_a: int = 37, n_b: int = 23) -> tuple[ImageHashes, ImageHashes]:
    """Hashes near a few shared patterns (many pairs within 8 bits), some copies (correlation ~0.99) and some
    shared exact digests."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 2**63, size=4, dtype=np.uint64)

    def near(n: int) -> list[int]:
        flips = [sum(1 << int(k) for k in rng.choice(64, rng.integers(0, 7), replace=False)) for _ in range(n)]
        return [int(patterns[rng.integers(4)]) ^ f for f in flips]

    va, vb = rng.normal(size=(n_a, 4096)), rng.normal(size=(n_b, 4096))
    copies = rng.choice(n_a, 6, replace=False)
    vb[:6] = va[copies] + 0.1 * rng.normal(size=(6, 4096))
    exact_b = [f"b{k}" for k in range(n_b)]
    exact_b[6:9] = [f"a{k}" for k in copies[:3]]  # exact duplicates of a rows
    return _hashes("a", near(n_a), va), _hashes("b", near(n_b), vb, exact_b)


@pytest.mark.parametrize("dense", [0.0, 2.0])  # correlations by one matrix product per block, or row by row
@pytest.mark.parametrize("block", [1, 5, 2048])
def test_streaming_matches_a_brute_force_reference(block, dense, monkeypatch):
    monkeypatch.setattr(audit_module, "DENSE_FRACTION", dense)
    a, b = _random_set(1)
    duplicates, candidates = _reference(a, b, threshold=8)
    assert duplicates and len(candidates) > 50  # the set exercises both outcomes
    found = near_matches(a, b, threshold=8, cap=10**6, block=block)
    assert found.duplicates == duplicates
    assert [c[:3] for c in found.candidates] == [c[:3] for c in candidates]
    assert [c[3] for c in found.candidates] == pytest.approx([c[3] for c in candidates], abs=1e-5)
    assert found.total == len(candidates) and found.candidate_rows == sorted({c[1] for c in candidates})


@pytest.mark.parametrize("block", [1, 4, 2048])
def test_candidate_cap_keeps_the_best_correlated_and_counts_them_all(block):
    a, b = _random_set(2)
    duplicates, candidates = _reference(a, b, threshold=8)
    found = near_matches(a, b, threshold=8, cap=7, block=block)
    best = sorted(sorted(candidates, key=lambda c: -c[3])[:7])
    assert [c[:3] for c in found.candidates] == [c[:3] for c in best]
    assert found.total == len(candidates) > 7 and found.duplicates == duplicates
    assert found.candidate_rows == sorted({c[1] for c in candidates})


def test_each_image_is_read_once_and_the_scratch_folder_is_removed(planted, tmp_path, monkeypatch):
    pretrain, evaluation = planted
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    reads: list[str] = []
    original = audit_module.read_image

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(audit_module, "read_image", counted)
    report = audit(pretrain, {"eval": evaluation})
    assert report.overlaps[0].near_duplicates  # a pair compared in detail
    paths = [str(t.image_path(i)) for t in (pretrain, evaluation) for i in range(len(t))]
    assert sorted(reads) == sorted(paths) and len(set(paths)) == 16
    assert list(scratch.iterdir()) == []


@pytest.fixture()
def alike(tmp_path):
    """3 pre-training films; as evaluation, another patient's film with the outline of s2, and a broken file."""
    pre = [_record("s", i, fx.png(tmp_path / f"s{i}.png", fx.radiograph(i)).name, f"pp{i}") for i in range(3)]
    fx.png(tmp_path / "alike.png", fx.radiograph(2, texture_seed=77))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    ev = [_record("e", 0, "alike.png", "q0"), _record("e", 1, "broken.png", "q1")]
    return RecordTable.from_records(pre, tmp_path), RecordTable.from_records(ev, tmp_path)


def test_films_alike_in_outline_only_are_candidates_not_near_duplicates(alike):
    """Another patient's film with the same outline (what the perceptual hash sees) and its own fine structure
    is listed as a candidate with its correlation, not flagged; an unreadable image is counted, not a crash."""
    pretrain, evaluation = alike
    report = audit(pretrain, {"eval": evaluation})
    (overlap,) = report.overlaps
    assert report.clean() and overlap.near_duplicates == [] and overlap.unreadable == ["e1"]
    ((a, b, bits, r),) = overlap.near_candidates
    assert (a, b) == ("s2", "e0") and bits <= report.threshold and r < report.min_correlation


def test_a_truncated_candidate_list_is_still_counted(alike, tmp_path):
    pretrain, evaluation = alike
    report = audit(pretrain, {"eval": evaluation}, max_candidates=0)
    (overlap,) = report.overlaps
    assert overlap.near_candidates == [] and overlap.near_candidates_total == 1
    assert overlap.near_candidate_ids == ["e0"] and report.summary()[0]["near_candidates"] == 1
    written = json.loads(report.write(tmp_path / "audit.json").read_text())
    assert written["max_candidates"] == 0 and written["overlaps"][0]["near_candidates_truncated"]
    assert not json.loads(audit(pretrain, {"eval": evaluation}).write(tmp_path / "full.json").read_text())[
        "overlaps"][0]["near_candidates_truncated"]


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
