"""The phantom generator: deterministic, labels agree with pixels and reports, anatomy varies by patient."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radlab.data.phantoms import PHANTOM_FINDINGS, Lesion, Study, render, sample_anatomy, synthesize
from radlab.data.records import RecordTable

MENTIONS = {
    "cardiomegaly": r"cardiomegaly|heart size|cardiac silhouette|cardiomediastinal",
    "pleural_effusion": r"pleural effusion",
    "consolidation": r"consolidation",
    "lung_opacity": r"opacit",
    "nodule": r"nodul",
    "pneumothorax": r"pneumothorax",
    "edema": r"edema",
    "support_devices": r"tube|pacemaker|catheter|support device",
}
NEGATION = re.compile(r"\b(no|not|without|normal)\b", re.I)
HEDGE = re.compile(r"\b(possible|may)\b", re.I)


class Phantoms:
    """A generated set with its pixels and masks loaded as arrays."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.table = synthesize(out, n=200, size=64, seed=0)
        self.frame = self.table.frame
        n = len(self.table)
        self.images = np.stack([_read(self.table.image_path(i)) / 255.0 for i in range(n)])
        self.lungs = np.stack([_read(self.table.mask_path(i, "lungs")) > 0 for i in range(n)])
        self.heart = np.stack([_read(self.table.mask_path(i, "heart")) > 0 for i in range(n)])

    def label(self, name: str) -> np.ndarray:
        return self.frame[f"label_{name}"].to_numpy()


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float64)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Phantoms:
    return Phantoms(tmp_path_factory.mktemp("phantoms"))


def _sentences(report: str) -> list[str]:
    text = report.replace("FINDINGS:", "").replace("IMPRESSION:", "")
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def _stated_side(report: str, pattern: str) -> str:
    """Laterality of the first non-negated sentence mentioning the finding."""
    for sentence in _sentences(report):
        if re.search(pattern, sentence, re.I) and not NEGATION.search(sentence):
            return next(s for s in ("bilateral", "left", "right") if s in sentence.lower())
    raise AssertionError(f"no positive mention of {pattern!r} in {report!r}")


def _zone(lungs: np.ndarray, side: str, part: str) -> np.ndarray:
    """The lateral half of the upper or lower zone of one lung (patient left = image right)."""
    cols = np.arange(lungs.shape[1])[None, :]
    half = lungs & ((cols >= lungs.shape[1] / 2) if side == "left" else (cols < lungs.shape[1] / 2))
    rows = np.flatnonzero(half.any(1))
    height, r = rows[-1] - rows[0] + 1, np.arange(lungs.shape[0])[:, None]
    half &= (r >= rows[0] + 0.7 * height) if part == "lower" else (r <= rows[0] + 0.35 * height)
    used = np.flatnonzero(half.any(0))
    middle = (used[0] + used[-1]) / 2
    return half & ((cols >= middle) if side == "left" else (cols <= middle))


def _extent(mask: np.ndarray) -> int:
    cols = np.flatnonzero(mask.any(0))
    return int(cols[-1] - cols[0] + 1)


def _zone_means(ph: Phantoms, name: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity of a zone on each side: on the stated side of positives, and on both sides of negatives."""
    labels, pos, neg = ph.label(name), [], []
    for i in range(len(labels)):
        stated = _stated_side(ph.frame["report"][i], MENTIONS[name]) if labels[i] else ""
        for side in ("left", "right"):
            value = ph.images[i][_zone(ph.lungs[i], side, part)].mean()
            if labels[i] == 0:
                neg.append(value)
            elif stated in (side, "bilateral"):
                pos.append(value)
    return np.array(pos), np.array(neg)


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", n=30, size=48, seed=3)
    b = synthesize(tmp_path / "b", n=30, size=48, seed=3, progress=True)
    c = synthesize(tmp_path / "c", n=30, size=48, seed=4)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    for i in range(len(a)):
        assert a.image_path(i).read_bytes() == b.image_path(i).read_bytes()
        assert a.mask_path(i, "lungs").read_bytes() == b.mask_path(i, "lungs").read_bytes()
    assert not a.frame.equals(c.frame)
    assert not set(a.frame["patient_id"]) & set(c.frame["patient_id"])  # other people, not the same ones redrawn
    pixels_a = np.stack([_read(a.image_path(i)) for i in range(len(a))])
    pixels_c = np.stack([_read(c.image_path(i)) for i in range(len(c))])
    assert np.abs(pixels_a - pixels_c).mean() > 5


def test_cardiomegaly_label_matches_cardiothoracic_ratio_of_masks(phantoms: Phantoms) -> None:
    ctr = np.array([_extent(h) / _extent(lu) for h, lu in zip(phantoms.heart, phantoms.lungs, strict=True)])
    positive, pa = phantoms.label("cardiomegaly") != 0, (phantoms.frame["view"] == "PA").to_numpy()
    assert positive.sum() >= 15
    assert (ctr[positive] > 0.5).mean() >= 0.9
    assert (ctr[~positive & pa] < 0.5).mean() >= 0.95
    assert phantoms.heart[positive].sum((1, 2)).mean() > 1.3 * phantoms.heart[~positive].sum((1, 2)).mean()


def test_effusion_brightens_the_stated_costophrenic_zone(phantoms: Phantoms) -> None:
    pos, neg = _zone_means(phantoms, "pleural_effusion", "lower")
    assert len(pos) >= 15
    assert pos.mean() > neg.mean() + 0.12
    assert np.median(pos) > np.percentile(neg, 95)


def test_pneumothorax_darkens_the_stated_apex(phantoms: Phantoms) -> None:
    pos, neg = _zone_means(phantoms, "pneumothorax", "upper")
    assert len(pos) >= 10
    assert pos.mean() < neg.mean() - 0.08
    assert np.median(pos) < np.percentile(neg, 5)


def test_consolidation_brightens_the_stated_lung(phantoms: Phantoms) -> None:
    labels, shift = phantoms.label("consolidation"), {"left": [], "right": []}
    asymmetry = {}
    for side, other in (("left", "right"), ("right", "left")):
        asymmetry[side] = np.array([img[_half(lu, side)].mean() - img[_half(lu, other)].mean()
                                    for img, lu in zip(phantoms.images, phantoms.lungs, strict=True)])
    for i in np.flatnonzero(labels != 0):
        side = _stated_side(phantoms.frame["report"][i], MENTIONS["consolidation"])
        shift[side].append(asymmetry[side][i] - np.median(asymmetry[side][labels == 0]))
    gains = np.concatenate([shift["left"], shift["right"]])
    assert len(gains) >= 10
    assert gains.mean() > 0.02 and (gains > 0).mean() >= 0.75


def _half(lungs: np.ndarray, side: str) -> np.ndarray:
    cols = np.arange(lungs.shape[1])[None, :]
    return lungs & ((cols >= lungs.shape[1] / 2) if side == "left" else (cols < lungs.shape[1] / 2))


@pytest.mark.parametrize("name, lesion", [
    ("nodule", Lesion(severity=1, side="right", zone="upper", size_mm=8)),
    ("consolidation", Lesion(severity=2, side="left", zone="lower")),
    ("lung_opacity", Lesion(severity=1, side="right", zone="middle")),
])
def test_focal_opacities_brighten_the_stated_lung(name: str, lesion: Lesion) -> None:
    study = Study(noise=0.0)
    for k in range(5):
        anatomy = sample_anatomy(np.random.default_rng(k))
        clean, masks = render(anatomy, {}, 64, np.random.default_rng(0), study)
        sick, _ = render(anatomy, {name: lesion}, 64, np.random.default_rng(0), study)
        diff = (sick.astype(float) - clean) / 255
        stated = diff[_half(masks["lungs"], lesion.side)]
        other = diff[_half(masks["lungs"], "left" if lesion.side == "right" else "right")]
        assert (diff >= 0).all() and stated.sum() > 1 and stated.sum() > 10 * other.sum()
        assert stated.max() > (0.2 if name == "nodule" else 0.05)


def test_report_mentions_agree_with_labels(phantoms: Phantoms) -> None:
    uncertain = 0
    for i, report in enumerate(phantoms.frame["report"]):
        assert report.startswith("FINDINGS: ") and " IMPRESSION: " in report
        sentences = _sentences(report)
        for name in PHANTOM_FINDINGS:
            label = phantoms.label(name)[i]
            mentions = [s for s in sentences if re.search(MENTIONS[name], s, re.I)]
            negated = [s for s in mentions if NEGATION.search(s)]
            affirmed = [s for s in mentions if not NEGATION.search(s)]
            certain = [s for s in affirmed if not HEDGE.search(s)]
            assert not negated or label == 0, (name, label, report)
            if label == 0:
                assert not affirmed, (name, report)
            elif label == 1:
                assert affirmed and (certain or name == "lung_opacity"), (name, report)
            else:
                uncertain += 1
                assert affirmed and not certain, (name, report)
            if label and name in ("pleural_effusion", "pneumothorax"):
                assert re.search(r"\b(small|moderate|large)\b", " ".join(affirmed), re.I), report
        normal_impression = bool(re.search(r"No acute|Normal chest", phantoms.frame["impression"][i]))
        if phantoms.frame["label_no_finding"][i] == 1:
            assert normal_impression, report
        if normal_impression:
            assert all(phantoms.label(n)[i] == 0 for n in PHANTOM_FINDINGS if n != "support_devices"), report
    assert uncertain >= 1


def test_sex_and_age_change_the_anatomy(phantoms: Phantoms) -> None:
    frame = phantoms.frame
    area = phantoms.lungs.sum((1, 2))
    male = (frame["sex"] == "M").to_numpy()
    assert 0.3 < male.mean() < 0.7
    assert area[male].mean() > 1.08 * area[~male].mean()
    normal_pa = (phantoms.label("cardiomegaly") == 0) & (frame["view"] == "PA").to_numpy()
    ctr = np.array([_extent(h) / _extent(lu) for h, lu in zip(phantoms.heart, phantoms.lungs, strict=True)])
    assert np.corrcoef(ctr[normal_pa], frame["age"].to_numpy()[normal_pa])[0, 1] > 0.3
    assert frame["age"].between(20, 90).all()


def test_patients_have_several_similar_studies(phantoms: Phantoms) -> None:
    frame = phantoms.frame
    assert frame["id"].str.fullmatch(r"P\d{5}_S\d+_(PA|AP)").all()
    assert (frame["study_id"] + "_" + frame["view"] == frame["id"]).all()
    assert (frame["study_id"].str.split("_S").str[0] == frame["patient_id"]).all()
    per_patient = frame.groupby("patient_id").size()
    assert 1.5 < per_patient.mean() < 2.6 and (per_patient >= 2).mean() > 0.3
    assert 0.1 < (frame["view"] == "AP").mean() < 0.3
    first = frame.groupby("patient_id").head(1).index.to_numpy()
    same, other = [], []
    for a, b in zip(first[:-1], first[1:], strict=True):
        other.append(np.abs(phantoms.images[a] - phantoms.images[b]).mean())
        if b - a >= 2:
            same.append(np.abs(phantoms.images[a] - phantoms.images[a + 1]).mean())
    assert len(same) >= 20
    assert np.mean(same) < 0.85 * np.mean(other)


def test_written_table_round_trips(phantoms: Phantoms, tmp_path: Path) -> None:
    read = RecordTable.read(phantoms.out)
    pd.testing.assert_frame_equal(read.frame, phantoms.frame)
    moved = tmp_path / "copy.parquet"
    phantoms.table.write(moved)
    pd.testing.assert_frame_equal(RecordTable.read(moved).with_absolute_paths().frame,
                                  phantoms.table.with_absolute_paths().frame)
    frame = phantoms.frame
    assert set(read.label_names) == {*PHANTOM_FINDINGS, "no_finding"}
    assert set(np.unique(read.labels())) <= {-1.0, 0.0, 1.0}
    assert set(read.mask_columns) == {"mask_lungs", "mask_heart"}
    assert (frame["source"] == "phantom").all() and (frame["split"] == "").all()
    assert phantoms.images.shape[1:] == (64, 64)
    with Image.open(read.image_path(0)) as img, Image.open(read.mask_path(0, "heart")) as mask:
        assert img.mode == "L" and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    findings = read.labels([f for f in PHANTOM_FINDINGS if f != "support_devices"])
    assert ((read.labels(["no_finding"])[:, 0] == 1) == (findings == 0).all(1)).all()
