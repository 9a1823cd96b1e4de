"""Chunked retrieval equals brute force on small random data, whatever the chunk size; texts are keys by
content, so an oracle encoder scores R@1 = 1 however often reports repeat."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import sparse

from radlab.data.dataset import study_keys
from radlab.data.records import RecordTable
from radlab.evaluation.context import EvalContext
from radlab.evaluation.crossmodal import direction, distinct_texts, normalise_text, retrieval, text_retrieval
from radlab.evaluation.metrics import recall_at_k
from radlab.evaluation.retrieval import chunked_topk, correct_key_positions, split_sentences


def same_group(query_groups: np.ndarray, key_groups: np.ndarray) -> sparse.csr_array:
    return sparse.csr_array(np.asarray(query_groups)[:, None] == np.asarray(key_groups)[None, :])


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_topk_equals_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(120, 8)).astype(np.float32)
    scores, idx = chunked_topk(q, k, 10, chunk=chunk)
    sims = q @ k.T
    brute = np.argsort(-sims, axis=1)[:, :10]
    assert np.array_equal(idx, brute)
    assert np.allclose(scores, np.take_along_axis(sims, brute, 1), atol=1e-5)


def test_chunked_topk_can_exclude_self() -> None:
    x = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    _, idx = chunked_topk(x, x, 3, chunk=8, exclude=np.arange(30))
    assert not (idx == np.arange(30)[:, None]).any()


@pytest.mark.parametrize("chunk", [3, 4096])
def test_correct_key_positions_equal_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(40, 6)), rng.normal(size=(90, 6))
    q_groups = rng.integers(0, 20, 40).astype(str)
    k_groups = np.concatenate([np.arange(20), rng.integers(0, 20, 70)]).astype(str)
    above, tied, _ = correct_key_positions(q, k, same_group(q_groups, k_groups), chunk=chunk)
    sims = (q @ k.T).astype(np.float32)
    assert not tied.any()
    for i in range(40):
        correct = k_groups == q_groups[i]
        order = np.argsort(-sims[i], kind="stable")
        assert above[i] + 1 == int(np.flatnonzero(correct[order])[0]) + 1


def test_ties_are_broken_at_random_not_in_the_encoders_favour() -> None:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(50, 8))
    collapsed = np.tile(rng.normal(size=(1, 8)), (50, 1))
    groups = np.arange(50).astype(str)
    above, tied, _ = correct_key_positions(images, collapsed, same_group(groups, groups))
    assert (above == 0).all() and (tied == 49).all()
    out = recall_at_k(above, tied)
    assert out["R@1"] == pytest.approx(1 / 50) and out["R@10"] == pytest.approx(10 / 50) and out["R@50"] == 1.0
    assert out["median_rank"] == 25.5
    reports = rng.normal(size=(50, 8))
    reports[10:] = reports[10]  # 40 different texts the tower embeds alike: the right one is a 1-in-40 draw
    reports /= np.linalg.norm(reports, axis=1, keepdims=True)
    above, tied, _ = correct_key_positions(reports, reports, same_group(groups, groups))
    assert (above == 0).all() and (tied[:10] == 0).all() and (tied[10:] == 39).all()
    assert recall_at_k(above, tied)["R@1"] == pytest.approx((10 + 40 / 40) / 50)


def test_split_sentences_drops_headers() -> None:
    report = "FINDINGS: Heart is enlarged. No effusion.\nIMPRESSION: Cardiomegaly."
    assert split_sentences(report) == ["Heart is enlarged.", "No effusion.", "Cardiomegaly."]


def test_a_query_with_several_tied_correct_keys_gets_its_chance() -> None:
    """Report -> image on a collapsed tower, two images per study: chance, as a random order of the keys gives."""
    rng = np.random.default_rng(4)
    reports, images = rng.normal(size=(50, 8)), np.tile(rng.normal(size=(1, 8)), (100, 1))
    studies = np.arange(50).astype(str)
    above, tied, correct = correct_key_positions(reports, images, same_group(studies, np.repeat(studies, 2)))
    assert (above == 0).all() and (tied == 98).all() and (correct == 2).all()
    out = recall_at_k(above, tied, tied_correct=correct)
    orders = np.argsort(rng.random((20000, 100)), axis=1)  # random tie-breaks; keys 0 and 1 are correct
    first = np.minimum(np.argmax(orders == 0, axis=1), np.argmax(orders == 1, axis=1)) + 1
    for k in (1, 5, 10):
        assert out[f"R@{k}"] == pytest.approx((first <= k).mean(), abs=0.01)
    assert out["R@1"] == pytest.approx(2 / 100) and out["median_rank"] == pytest.approx(1 + 98 / 3)


def test_texts_are_keys_by_normalised_content() -> None:
    assert normalise_text("  No   Pneumothorax. ") == normalise_text("no pneumothorax") == "no pneumothorax"
    assert normalise_text("No effusion!?") == "no effusion" != normalise_text("No pleural effusion.")
    texts, contains = distinct_texts([["No pneumothorax.", "Cardiomegaly."], [], ["no  pneumothorax"],
                                      ["Cardiomegaly.", "Cardiomegaly"]])
    assert texts == ["No pneumothorax.", "Cardiomegaly."]  # each as first written
    assert contains.toarray().tolist() == [[1, 1], [0, 0], [1, 0], [0, 1]]


class OracleFeatures:
    """Stands in for ``FeatureCache``: a text is the unit bag of its normalised sentences, an image its report's
    bag, or with ``same`` (normalised text -> number) a text is that number's one-hot."""

    def __init__(self, same: dict[str, int] | None = None) -> None:
        self.same, self.vocabulary = same, {}

    def bag(self, text: str) -> np.ndarray:
        v = np.zeros(512)
        for sentence in split_sentences(text):
            v[self.vocabulary.setdefault(re.sub(r"\W+", " ", sentence.lower()).strip(), len(self.vocabulary))] += 1
        return v / np.linalg.norm(v)

    def get(self, encoder: object, table: RecordTable, rows: np.ndarray, kind: str, batch_size: int) -> np.ndarray:
        return np.stack([self.bag(table.texts()[r]) for r in rows])

    def text(self, encoder: object, texts: list[str], batch_size: int, kind: str) -> np.ndarray:
        if self.same is None:
            return np.stack([self.bag(t) for t in texts])
        return np.eye(max(self.same.values()) + 1)[[self.same[normalise_text(t)] for t in texts]]


SHARED = [("No pneumothorax. Heart size normal.", "No acute cardiopulmonary process."),
          ("Small left effusion. No pneumothorax.", "Small effusion."),
          ("Heart size normal.  lungs clear", "no acute cardiopulmonary process"),
          ("Cardiomegaly.", "Cardiomegaly."),
          ("no pneumothorax.  heart size normal.", "No acute cardiopulmonary process")]  # the first, respaced


def shared_reports(table: RecordTable) -> RecordTable:
    """The test studies' reports drawn from ``SHARED`` (each text in many studies, some with other spacing/case)."""
    frame = table.frame.copy()
    test = (frame["split"] == "test").to_numpy()
    pick = np.unique(study_keys(frame[test]), return_inverse=True)[1] % len(SHARED)
    frame.loc[test, "findings"] = [SHARED[p][0] for p in pick]
    frame.loc[test, "impression"] = [SHARED[p][1] for p in pick]
    frame.loc[test, "report"] = [f"FINDINGS: {SHARED[p][0]}\nIMPRESSION: {SHARED[p][1]}" for p in pick]
    return RecordTable(frame, table.root)


def test_an_oracle_encoder_retrieves_perfectly_however_often_reports_repeat(split_table: RecordTable) -> None:
    """Images embedded as their own reports: every correct key outscores every other, at both levels and both
    ways (a sentence's best image contains it; an image's best sentence is in its report). Keyed by study, the
    copies of other studies would tie with the right one and R@1 would be about 1 / copies."""
    table = shared_reports(split_table)
    ctx = EvalContext(SimpleNamespace(has_text=True), table, [], features=OracleFeatures(), task="retrieval",
                      n_boot=20)
    out = retrieval(ctx)
    n_images = len(ctx.rows("test"))
    for level, n_texts in (("report", 4), ("sentence", 7)):
        i2t, t2i = out[level]["image_to_text"], out[level]["text_to_image"]
        for block in (i2t, t2i):
            assert block["R@1"] == 1.0 and block["median_rank"] == 1.0
            assert block["R@1_ci"]["ci_low"] == pytest.approx(1.0)
        assert (i2t["n_queries"], i2t["n_keys"], t2i["n_queries"], t2i["n_keys"]) == (n_images, n_texts, n_texts,
                                                                                    n_images)
    assert out["mean_R@1"] == 1.0


def test_text_retrieval_keys_sections_by_content(split_table: RecordTable) -> None:
    """Findings and impression of one study embedded alike: an impression shared by many studies is one key,
    correct for all of them, and one query, whose correct keys are all their findings."""
    same = {normalise_text(f): 0 if i in (0, 2, 4) else i for i, (f, _) in enumerate(SHARED)}
    same |= {normalise_text(m): 0 if i in (0, 2, 4) else i for i, (_, m) in enumerate(SHARED)}
    ctx = EvalContext(SimpleNamespace(has_text=True), shared_reports(split_table), [],
                      features=OracleFeatures(same), task="text_retrieval", n_boot=20)
    out = text_retrieval(ctx)
    assert out["findings_to_impression"]["n_queries"] == 4 and out["impression_to_findings"]["n_queries"] == 3
    assert out["findings_to_impression"]["R@1"] == out["impression_to_findings"]["R@1"] == 1.0


def test_a_text_shared_by_patients_is_split_among_them_in_the_bootstrap() -> None:
    """Texts 0 (patients 0 and 1, a hit), 1 (patient 1, a miss), 2 (patient 2, a hit): text 0 carries half a
    query with each patient, so a resample weighs it by its patients' mean draw count."""
    ctx = EvalContext(SimpleNamespace(), SimpleNamespace(), [], task="retrieval", n_boot=50)
    keys = np.eye(3)
    queries = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    owners = sparse.csr_array(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]))
    out = direction(ctx, "t2i", queries, keys, sparse.csr_array(np.eye(3)), owners)
    assert out["R@1"] == out["R@1_ci"]["estimate"] == pytest.approx(2 / 3)
    statistic, units, _ = ctx.statistics["retrieval/t2i/R@1"]
    assert units.tolist() == [0, 1, 1, 2]  # (text, patient) pairs
    assert statistic(np.array([1, 2])) == pytest.approx(1 / 3)  # patient 1 alone: half of text 0, all of text 1
    assert statistic(np.array([0, 1, 2])) == pytest.approx(1 / 2)  # patients 0 and 1: texts 0 and 1, once each
    assert statistic(np.array([1, 2, 1, 2, 3])) == pytest.approx(2 / 4)  # patient 1 twice, patient 2 once
    images = direction(ctx, "i2t", queries, keys, sparse.csr_array(np.eye(3)), sparse.csr_array(np.eye(3)))
    statistic, units, _ = ctx.statistics["retrieval/i2t/R@1"]  # one patient a query: once per draw
    assert images["R@1"] == pytest.approx(2 / 3) and units.tolist() == [0, 1, 2]
    assert statistic(np.array([0, 0, 1])) == pytest.approx(2 / 3) and statistic(np.array([0, 2])) == 1.0
