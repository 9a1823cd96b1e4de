"""Linear probe: per-finding logistic regression on frozen features, C chosen on the validation split."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from radlab.evaluation.context import TASKS, EvalContext, evaluable_labels

C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_binary_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     seed: int) -> LogisticRegression:
    """Class-balanced logistic regression; C picked by validation AUC (train loss when val is one-class)."""
    best, best_score = None, -np.inf
    for c in C_GRID:
        probe = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        probe.fit(x_train, y_train)
        if len(np.unique(y_val)) == 2:
            score = roc_auc_score(y_val, probe.decision_function(x_val))
        else:
            score = -abs(c - 1.0)
        if score > best_score:
            best, best_score = probe, score
    assert best is not None
    return best


@TASKS.register("linear_probe", "per-finding logistic regression on frozen features; test AUC")
def linear_probe(ctx: EvalContext) -> dict:
    scaler = StandardScaler().fit(ctx.image_features("train"))
    x = {s: scaler.transform(ctx.image_features(s)) for s in ("train", "val", "test")}
    y = {s: ctx.labels(s) for s in ("train", "val", "test")}
    per_label = {}
    for k, name in enumerate(ctx.label_names):
        if name not in evaluable_labels(ctx.table, [name]):
            continue
        known = {s: np.isin(y[s][:, k], (0, 1)) for s in x}
        if len(np.unique(y["train"][known["train"], k])) < 2:
            continue
        probe = fit_binary_probe(x["train"][known["train"]], y["train"][known["train"], k],
                                 x["val"][known["val"]], y["val"][known["val"], k], ctx.seed)
        scores = probe.decision_function(x["test"][known["test"]])
        per_label[name] = float(roc_auc_score(y["test"][known["test"], k], scores))
    if not per_label:
        raise ValueError("no finding has both classes in the train and test splits")
    return {"auc": per_label, "macro_auc": float(np.mean(list(per_label.values())))}
