"""Chunked retrieval equals brute force on small random data, whatever the chunk size."""

from __future__ import annotations

import numpy as np
import pytest

from radlab.evaluation.metrics import recall_at_k
from radlab.evaluation.retrieval import chunked_topk, correct_key_positions, split_sentences


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
    above, tied, _ = correct_key_positions(q, k, q_groups, k_groups, chunk=chunk)
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
    above, tied, _ = correct_key_positions(images, collapsed, groups, groups)
    assert (above == 0).all() and (tied == 49).all()
    out = recall_at_k(above, tied)
    assert out["R@1"] == pytest.approx(1 / 50) and out["R@10"] == pytest.approx(10 / 50) and out["R@50"] == 1.0
    assert out["median_rank"] == 25.5
    reports = rng.normal(size=(50, 8))
    reports[10:] = reports[10]  # 40 studies share one report text: the right one among them is a 1-in-40 draw
    reports /= np.linalg.norm(reports, axis=1, keepdims=True)
    above, tied, _ = correct_key_positions(reports, reports, groups, groups)
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
    above, tied, correct = correct_key_positions(reports, images, studies, np.repeat(studies, 2))
    assert (above == 0).all() and (tied == 98).all() and (correct == 2).all()
    out = recall_at_k(above, tied, tied_correct=correct)
    orders = np.argsort(rng.random((20000, 100)), axis=1)  # random tie-breaks; keys 0 and 1 are correct
    first = np.minimum(np.argmax(orders == 0, axis=1), np.argmax(orders == 1, axis=1)) + 1
    for k in (1, 5, 10):
        assert out[f"R@{k}"] == pytest.approx((first <= k).mean(), abs=0.01)
    assert out["R@1"] == pytest.approx(2 / 100) and out["median_rank"] == pytest.approx(1 + 98 / 3)
