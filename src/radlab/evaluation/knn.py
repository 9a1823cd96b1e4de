"""k-nearest-neighbour classification on L2-normalised frozen features; k chosen on the validation split.

Each finding votes among the training rows annotated for it (0/1): rows that are unannotated (NaN) or uncertain
(-1) for a finding are not searched for it, so they neither take up one of the k places nor read as negative."""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import auc_report, two_class
from radlab.evaluation.metrics import macro_auc
from radlab.evaluation.retrieval import chunked_topk

K_GRID = (5, 10, 20, 50)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def annotation_groups(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows annotated 0/1, label columns annotated on exactly those rows) for each distinct pattern,
    so findings annotated on the same rows share one neighbour search."""
    known = np.isin(labels, (0, 1))
    columns: dict[bytes, list[int]] = {}
    for j in range(labels.shape[1]):
        columns.setdefault(known[:, j].tobytes(), []).append(j)
    return [(np.flatnonzero(known[:, cols[0]]), np.array(cols)) for cols in columns.values()]


def knn_scores(train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Per-query, per-finding score: similarity-weighted fraction of positives among the ``k`` nearest training
    rows annotated (0/1) for that finding (all of them where fewer). Every query thus has a neighbour for every
    finding some training row annotates; a finding none annotates has no vote and no prevalence: NaN."""
    scores = np.full((len(queries), labels.shape[1]), np.nan)
    for rows, cols in annotation_groups(labels):
        if not len(rows):
            continue
        sims, idx = chunked_topk(queries, train[rows], k)
        votes = labels[rows[idx]][..., cols]
        # a weight per neighbour and finding, not one broadcast: numpy then sums a [Q, k, F] array as a search
        # over all rows did, so fully annotated training data scores bit for bit the same
        weights = np.repeat(np.exp(sims / 0.1)[..., None], len(cols), axis=2)
        scores[:, cols] = (weights * (votes == 1)).sum(1) / weights.sum(1)
    return scores


@TASKS.register("knn", "k-nearest-neighbour vote on frozen features (k chosen on val); test AUC with CI")
def knn(ctx: EvalContext) -> dict:
    ctx.require_images()
    feats = {s: ctx.image_features(s) for s in ("train", "val", "test")}
    center = feats["train"].mean(0, keepdims=True)
    x = {s: normalise(v - center) for s, v in feats.items()}
    y = {s: ctx.labels(s) for s in feats}
    names = [n for j, n in enumerate(ctx.label_names)
             if two_class(y["test"][:, j]) and two_class(y["train"][:, j])]
    if not names:
        raise TaskSkipped("no finding has both classes in the train and test splits")
    cols = [ctx.label_names.index(n) for n in names]
    grid = [int(k) for k in ctx.option_list("k_grid", K_GRID) if int(k) <= len(x["train"])] or [len(x["train"])]
    best_k, best = grid[0], -np.inf
    if any(two_class(y["val"][:, j]) for j in cols):
        for k in grid:
            score = macro_auc(y["val"][:, cols], knn_scores(x["train"], y["train"][:, cols], x["val"], k))
            if score > best:
                best_k, best = k, score
    scores = np.full((len(x["test"]), len(ctx.label_names)), np.nan)
    scores[:, cols] = knn_scores(x["train"], y["train"][:, cols], x["test"], best_k)
    return {**auc_report(ctx, y["test"], scores, names), "k": int(best_k)}
