"""k-NN votes per finding among the training rows annotated for it: unannotated (NaN) and uncertain (-1) rows
take no neighbour place, so they change nothing, and a fully annotated training set scores as a search over
all rows does."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from radlab.data.records import RecordTable
from radlab.evaluation.context import EvalContext
from radlab.evaluation.knn import knn_scores, normalise
from radlab.evaluation.retrieval import chunked_topk
from radlab.evaluation.runner import run_tasks


def reference_scores(train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Per finding and query: the similarity-weighted positive share of the k most similar annotated rows."""
    out = np.full((len(queries), labels.shape[1]), np.nan)
    for j in range(labels.shape[1]):
        rows = np.flatnonzero(np.isin(labels[:, j], (0, 1)))
        for q, query in enumerate(queries):
            sims = train[rows] @ query
            top = np.argsort(-sims)[:k]
            weights = np.exp(sims[top] / 0.1)
            out[q, j] = (weights * labels[rows[top], j]).sum() / weights.sum()
    return out


def all_rows_scores(train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The vote over the k nearest of all training rows (what radlab computed before it searched per finding)."""
    sims, idx = chunked_topk(queries, train, k)
    weights = np.exp(sims / 0.1)[..., None]
    neighbour = labels[idx]
    known = np.isin(neighbour, (0, 1))
    positive = (neighbour == 1) & known
    return (weights * positive).sum(1) / np.maximum((weights * known).sum(1), 1e-12)


def test_each_finding_votes_among_the_rows_annotated_for_it() -> None:
    # a query beside two unannotated rows: its nearest annotated row (positive) votes, not "no positive" (0)
    train = normalise(np.array([[1.0, 0.0], [0.99, 0.14], [0.6, 0.8], [-1.0, 0.0]]))
    labels = np.array([[np.nan], [-1.0], [1.0], [0.0]])
    assert knn_scores(train, labels, normalise(np.array([[1.0, 0.05]])), 1)[0, 0] == 1.0

    rng = np.random.default_rng(0)
    train, queries = normalise(rng.normal(size=(80, 6))), normalise(rng.normal(size=(30, 6)))
    labels = (rng.random((80, 4)) < 0.3).astype(float)
    blank = rng.random(80) < 0.5
    labels[blank, :2] = np.nan  # findings 0 and 1 share one pattern (one search), 2 has its own, 3 is complete
    labels[rng.random(80) < 0.3, 2] = -1.0
    for k in (1, 5, 60):  # 60: more than the 40-odd rows annotating findings 0-2, so all of them vote
        np.testing.assert_allclose(knn_scores(train, labels, queries, k), reference_scores(train, labels, queries, k),
                                   rtol=1e-5)
    complete = (rng.random((80, 5)) < 0.3).astype(float)
    for k in (1, 5, 20, 50):  # every row annotated: bit for bit the search over all rows
        assert np.array_equal(knn_scores(train, complete, queries, k), all_rows_scores(train, complete, queries, k))
        assert np.array_equal(knn_scores(train, complete[:, :1], queries, k),
                              all_rows_scores(train, complete[:, :1], queries, k))


def test_a_finding_no_training_row_annotates_has_no_score() -> None:
    train = normalise(np.eye(3))
    labels = np.array([[1.0, np.nan], [0.0, -1.0], [1.0, np.nan]])
    scores = knn_scores(train, labels, train, 2)
    assert np.isnan(scores[:, 1]).all() and np.isfinite(scores[:, 0]).all()


@dataclass
class ArrayContext(EvalContext):
    """An evaluation context on given features, one per table row, every row with an image."""

    x: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def images_present(self) -> np.ndarray:
        return np.ones(len(self.table), dtype=bool)

    def image_features(self, split: str, kind: str = "pooled") -> np.ndarray:
        return self.x[self.rows(split)]


def test_unannotated_training_rows_change_neither_k_nor_the_test_auc() -> None:
    """Training rows without a label for any finding (NaN, or uncertain) hold no information: the task (k
    chosen on val included) is the same with or without them; they come in mirrored pairs about the annotated
    rows' mean, so the centring of the features does not move either."""
    rng = np.random.default_rng(0)
    names = ["cardiomegaly", "edema", "pneumothorax"]
    split = np.array(["train"] * 300 + ["val"] * 100 + ["test"] * 150)
    y = (rng.random((len(split), 3)) < 0.3).astype(float)
    x = rng.normal(size=(len(split), 8))
    x[:, :3] += 1.5 * y
    extra = rng.normal(size=(300, 8)) + 0.5
    extra = np.vstack([extra, 2 * x[:300].mean(0) - extra])
    blank = np.where(rng.random((600, 1)) < 0.5, np.nan, -1.0) * np.ones((1, 3))

    def knn_result(features: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> dict:
        frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(splits))], "source": "synthetic",
                              "image_path": [f"r{i}.png" for i in range(len(splits))],
                              "patient_id": [f"p{i}" for i in range(len(splits))], "split": splits,
                              **{f"label_{n}": labels[:, j] for j, n in enumerate(names)}})
        ctx = ArrayContext(None, RecordTable(frame), names, n_boot=20, x=features)  # type: ignore[arg-type]
        return run_tasks(ctx, ["knn"])["knn"]

    alone = knn_result(x, y, split)
    pooled = knn_result(np.vstack([x, extra]), np.vstack([y, blank]), np.concatenate([split, ["train"] * 600]))
    assert pooled["k"] == alone["k"]
    for name in names:
        assert pooled["auc"][name] == pytest.approx(alone["auc"][name], abs=1e-9)
