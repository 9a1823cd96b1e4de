"""Label-efficient probes: K positives and K negatives per finding (K-shot), and fractions of the training
patients; every setting repeated over seeds and reported as mean and standard deviation of macro AUC."""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import fit_binary_probe, probe_scores, standardised, two_class
from radlab.evaluation.metrics import macro_auc, roc_auc
from radlab.evaluation.stats import mean_std

SHOTS = (1, 2, 4, 8, 16)
FRACTIONS = (0.01, 0.1, 1.0)
N_SEEDS = 5


def kshot_macro_auc(ctx: EvalContext, x: dict, y: dict, k: int, seed: int) -> float:
    """Macro test AUC of per-finding probes, each trained on K positives + K negatives drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    values = []
    for j in range(len(ctx.label_names)):
        pos, neg = np.flatnonzero(y["train"][:, j] == 1), np.flatnonzero(y["train"][:, j] == 0)
        known_test = np.isin(y["test"][:, j], (0, 1))
        if len(pos) < k or len(neg) < k or not two_class(y["test"][known_test, j]):
            continue
        rows = np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)])
        known_val = np.isin(y["val"][:, j], (0, 1))
        probe = fit_binary_probe(x["train"][rows], y["train"][rows, j], x["val"][known_val],
                                 y["val"][known_val, j], seed)
        values.append(roc_auc(y["test"][known_test, j], probe.decision_function(x["test"][known_test])))
    return float(np.mean(values)) if values else float("nan")


def fraction_macro_auc(ctx: EvalContext, x: dict, y: dict, fraction: float, seed: int) -> float:
    """Macro test AUC of probes trained on the images of a random ``fraction`` of training patients."""
    patients = ctx.patients(ctx.rows("train"))
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(unique, max(1, int(round(fraction * len(unique)))), replace=False)
    scores, fitted = probe_scores(ctx, x, y, train_rows=np.flatnonzero(np.isin(patients, chosen)), seed=seed)
    if not fitted:
        return float("nan")
    cols = [ctx.label_names.index(n) for n in fitted]
    return macro_auc(y["test"][:, cols], scores[:, cols])


@TASKS.register("kshot", "K-shot (K in 1..16) and 1/10/100% data-fraction linear probes over seeds")
def kshot(ctx: EvalContext) -> dict:
    shots = [int(k) for k in ctx.option_list("shots", SHOTS)]
    fractions = [float(f) for f in ctx.option_list("fractions", FRACTIONS)]
    seeds = [ctx.seed + s for s in range(int(ctx.option("seeds", N_SEEDS)))]
    x, y = standardised(ctx)
    out: dict = {"seeds": seeds, "kshot": {}, "fraction": {}}
    for k in shots:
        runs = [kshot_macro_auc(ctx, x, y, k, s) for s in seeds]
        out["kshot"][str(k)] = {**mean_std(runs), "per_seed": runs}
    for f in fractions:
        runs = [fraction_macro_auc(ctx, x, y, f, s) for s in seeds]
        out["fraction"][str(f)] = {**mean_std(runs), "per_seed": runs}
    if all(np.isnan(v["mean"]) for v in out["kshot"].values()):
        raise TaskSkipped("no finding has enough positives and negatives for K-shot sampling")
    last = out["kshot"][str(max(shots))]["mean"] if shots else float("nan")
    return {**out, "macro_auc": last}
