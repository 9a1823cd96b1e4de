"""Linear probe: per-finding class-balanced logistic regression on frozen features, C chosen on the
validation split; test AUC per finding, macro AUC with a patient-bootstrap interval."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.metrics import average_precision, macro_ap, macro_auc, roc_auc
from radlab.evaluation.subgroups import subgroup_report

C_GRID = (0.01, 0.1, 1.0, 10.0)


def fit_binary_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     seed: int, c_grid: tuple[float, ...] = C_GRID) -> LogisticRegression:
    """Class-balanced logistic regression; C picked by validation AUC (C=1 when val has one class).

    BLAS is held to one thread: small fits are many times slower with oversubscribed BLAS pools."""
    if len(np.unique(y_val)) < 2:
        c_grid = (1.0,)
    best, best_score = None, -np.inf
    for c in c_grid:
        probe = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        with threadpool_limits(1, user_api="blas"):
            probe.fit(x_train, y_train)
        score = roc_auc(y_val, probe.decision_function(x_val)) if len(c_grid) > 1 else 0.0
        if score > best_score:
            best, best_score = probe, score
    assert best is not None
    return best


def two_class(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())


def probe_scores(ctx: EvalContext, x: dict[str, np.ndarray], y: dict[str, np.ndarray],
                 train_rows: np.ndarray | None = None, seed: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Test scores [N_test, K] per finding (NaN columns where a probe cannot be fit), and the fitted names.

    ``train_rows`` restricts the training set (k-shot and data fractions)."""
    seed = ctx.seed if seed is None else seed
    xt, yt = (x["train"], y["train"]) if train_rows is None else (x["train"][train_rows], y["train"][train_rows])
    scores = np.full((len(x["test"]), len(ctx.label_names)), np.nan)
    fitted = []
    for k, name in enumerate(ctx.label_names):
        known = {s: np.isin(v[:, k], (0, 1)) for s, v in y.items()}
        known_train = np.isin(yt[:, k], (0, 1))
        if not two_class(y["test"][known["test"], k]) or not two_class(yt[known_train, k]):
            continue
        probe = fit_binary_probe(xt[known_train], yt[known_train, k], x["val"][known["val"]],
                                 y["val"][known["val"], k], seed)
        scores[:, k] = probe.decision_function(x["test"])
        fitted.append(name)
    return scores, fitted


def standardised(ctx: EvalContext, kind: str = "pooled") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    ctx.require_images()
    feats = {s: ctx.image_features(s, kind) for s in ("train", "val", "test")}
    scaler = StandardScaler().fit(feats["train"])
    return {s: scaler.transform(v) for s, v in feats.items()}, {s: ctx.labels(s) for s in feats}


def auc_report(ctx: EvalContext, labels: np.ndarray, scores: np.ndarray, names: list[str],
               rows: np.ndarray | None = None) -> dict:
    """Per-finding AUC, average precision and prevalence (AP's chance level), and ``macro_statistics`` over the
    test rows (the table rows of ``labels``/``scores``: the test images unless ``rows`` are given)."""
    cols = [ctx.label_names.index(n) for n in names]
    y, s = labels[:, cols], scores[:, cols]
    return {**per_finding(y, s, names), "macro_auc": macro_auc(y, s),
            **macro_statistics(ctx, y, s, names, ctx.rows("test") if rows is None else rows)}


def per_finding(y: np.ndarray, s: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """AUC, average precision and prevalence of each finding (the columns of ``y``/``s``) on its known rows."""
    out: dict[str, dict[str, float]] = {"auc": {}, "ap": {}, "prevalence": {}}
    for j, name in enumerate(names):
        known = np.isin(y[:, j], (0, 1))
        out["auc"][name] = roc_auc(y[known, j], s[known, j])
        out["ap"][name] = average_precision(y[known, j], s[known, j])
        out["prevalence"][name] = float(y[known, j].mean())
    return out


def macro_statistics(ctx: EvalContext, y: np.ndarray, s: np.ndarray, names: list[str], rows: np.ndarray) -> dict:
    """Over ``names`` (the columns of ``y``/``s``, whose rows are the table's ``rows``): the macro AUC's
    patient-bootstrap interval, the macro average precision with its interval (for rare findings, where AUC
    flatters; chance is the mean prevalence), and subgroups when the task asks (``evaluation/subgroups.py``)."""
    patients = ctx.patients(rows)
    auc = ctx.interval("macro_auc", lambda idx: macro_auc(y[idx], s[idx], strict=True), patients, over=names)
    ap = ctx.interval("macro_ap", lambda idx: macro_ap(y[idx], s[idx], strict=True), patients, over=names)
    return {"macro_auc_ci": auc, "macro_ap": macro_ap(y, s), "macro_ap_ci": ap,
            **subgroup_report(ctx, y, s, names, rows)}


@TASKS.register("linear_probe", "per-finding logistic regression on frozen features; test AUC with CI")
def linear_probe(ctx: EvalContext) -> dict:
    x, y = standardised(ctx)
    scores, fitted = probe_scores(ctx, x, y)
    if not fitted:
        raise TaskSkipped("no finding has both classes in the train and test splits")
    return {**auc_report(ctx, y["test"], scores, fitted), "c_grid": list(C_GRID)}
