"""Sex and age probes on frozen features: what an encoder encodes beyond findings (a bias audit).

Sex: class-balanced logistic regression (C on val), test AUC. Age: ridge regression (alpha on val), test
MAE and R^2. Patient-bootstrap intervals for each.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import fit_binary_probe, standardised, two_class
from radlab.evaluation.metrics import mean_absolute_error, r2, roc_auc

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def sex_probe(ctx: EvalContext, x: dict[str, np.ndarray]) -> dict | None:
    frame = ctx.table.frame
    y = {s: (frame["sex"].to_numpy()[ctx.rows(s)] == "F").astype(float) for s in x}
    known = {s: frame["sex"].to_numpy()[ctx.rows(s)] != "" for s in x}
    if not all(two_class(y[s][known[s]]) for s in ("train", "test")):
        return None
    probe = fit_binary_probe(x["train"][known["train"]], y["train"][known["train"]], x["val"][known["val"]],
                             y["val"][known["val"]], ctx.seed)
    yt, st = y["test"][known["test"]], probe.decision_function(x["test"][known["test"]])
    patients = ctx.patients(ctx.rows("test")[known["test"]])
    return {"auc": roc_auc(yt, st), "auc_ci": ctx.interval("sex_auc", lambda i: roc_auc(yt[i], st[i]), patients),
            "positive_class": "F", "n_test": int(len(yt))}


def age_probe(ctx: EvalContext, x: dict[str, np.ndarray]) -> dict | None:
    ages = ctx.table.frame["age"].to_numpy(dtype=float, na_value=np.nan)
    y = {s: ages[ctx.rows(s)] for s in x}
    known = {s: ~np.isnan(y[s]) for s in x}
    if known["train"].sum() < 5 or known["test"].sum() < 2:
        return None
    fit = {s: (x[s][known[s]], y[s][known[s]]) for s in x}
    best, best_mae = None, np.inf
    for alpha in ALPHAS if known["val"].sum() else (1.0,):
        with threadpool_limits(1, user_api="blas"):
            model = Ridge(alpha=alpha).fit(*fit["train"])
        mae = mean_absolute_error(fit["val"][1], model.predict(fit["val"][0])) if known["val"].sum() else 0.0
        if mae < best_mae:
            best, best_mae = model, mae
    assert best is not None
    yt, pt = fit["test"][1], best.predict(fit["test"][0])
    patients = ctx.patients(ctx.rows("test")[known["test"]])
    return {"mae": mean_absolute_error(yt, pt), "r2": r2(yt, pt),
            "mae_ci": ctx.interval("age_mae", lambda i: mean_absolute_error(yt[i], pt[i]), patients),
            "r2_ci": ctx.interval("age_r2", lambda i: r2(yt[i], pt[i]), patients),
            "alpha": float(best.alpha), "baseline_mae": mean_absolute_error(yt, np.full_like(yt, fit["train"][1].mean())),
            "n_test": int(len(yt))}


@TASKS.register("demographics", "sex (AUC) and age (MAE, R^2) probes on frozen features, with CIs")
def demographics(ctx: EvalContext) -> dict:
    x, _ = standardised(ctx)
    out = {"sex": sex_probe(ctx, x), "age": age_probe(ctx, x)}
    if out["sex"] is None and out["age"] is None:
        raise TaskSkipped("the records carry no usable sex or age")
    return out
