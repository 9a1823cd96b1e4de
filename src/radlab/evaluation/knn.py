"""k-nearest-neighbour classification on L2-normalised frozen features; k chosen on the validation split."""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import auc_report, two_class
from radlab.evaluation.metrics import macro_auc
from radlab.evaluation.retrieval import chunked_topk

K_GRID = (5, 10, 20, 50)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def knn_scores(train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Per-query, per-finding score: similarity-weighted fraction of annotated neighbours that are positive."""
    sims, idx = chunked_topk(queries, train, k)
    weights = np.exp(sims / 0.1)[..., None]
    neighbour = labels[idx]
    known = np.isin(neighbour, (0, 1))
    positive = (neighbour == 1) & known
    return (weights * positive).sum(1) / np.maximum((weights * known).sum(1), 1e-12)


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
