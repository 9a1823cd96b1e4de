"""Chunked retrieval equals brute force on small random data, whatever the chunk size."""

from __future__ import annotations

import numpy as np
import pytest

from radlab.evaluation.retrieval import chunked_topk, first_correct_ranks, split_sentences


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
def test_first_correct_ranks_equal_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(40, 6)), rng.normal(size=(90, 6))
    q_groups = rng.integers(0, 20, 40).astype(str)
    k_groups = np.concatenate([np.arange(20), rng.integers(0, 20, 70)]).astype(str)
    ranks = first_correct_ranks(q, k, q_groups, k_groups, chunk=chunk)
    sims = (q @ k.T).astype(np.float32)
    for i in range(40):
        correct = k_groups == q_groups[i]
        best = sims[i, correct].max()
        order = np.argsort(-sims[i], kind="stable")
        first = int(np.flatnonzero(correct[order])[0]) + 1
        assert ranks[i] == first == (sims[i] > best).sum() + 1


def test_split_sentences_drops_headers() -> None:
    report = "FINDINGS: Heart is enlarged. No effusion.\nIMPRESSION: Cardiomegaly."
    assert split_sentences(report) == ["Heart is enlarged.", "No effusion.", "Cardiomegaly."]
