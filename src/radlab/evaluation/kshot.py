"""Label-efficient probes: K positive and K other negative patients per finding (K-shot), and fractions of the
training patients; every setting repeated over seeds and reported as mean and standard deviation of macro AUC.

Every setting averages the same findings, so a curve over K or over fractions measures the probe, not which
findings happened to be drawable: K-shot uses the findings whose training patients always allow max(K)
positive and max(K) other negative patients; the fractions use the linear probe's findings, and a finding a
sampled fraction has no positives (or no negatives) for scores as chance (a constant score, AUC 0.5), counted
in ``n_unfit``. When no finding allows max(K), the K-shot curve is left out (``kshot_skipped`` says why) and
the fractions still run.
"""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import fit_binary_probe, probe_scores, standardised, two_class
from radlab.evaluation.metrics import macro_auc, roc_auc
from radlab.evaluation.stats import mean_std

SHOTS = (1, 2, 4, 8, 16)
FRACTIONS = (0.01, 0.1, 1.0)
N_SEEDS = 5


def kshot_findings(ctx: EvalContext, y: dict, k_max: int) -> list[int]:
    """Label columns with both classes in test whose training patients always allow ``k_max`` positive and
    ``k_max`` other negative patients (a patient can have both: positive at one visit, negative at the next)."""
    patients = ctx.patients(ctx.rows("train"))
    columns = []
    for j in range(len(ctx.label_names)):
        positive, negative = (set(patients[y["train"][:, j] == c]) for c in (1, 0))
        if len(positive) >= k_max and len(negative) - min(k_max, len(positive & negative)) >= k_max \
                and two_class(y["test"][:, j]):
            columns.append(j)
    return columns


def draw_shots(rng: np.random.Generator, candidates: np.ndarray, patients: np.ndarray, k: int,
               exclude: np.ndarray = np.array([], dtype=str)) -> np.ndarray:
    """One image from each of ``k`` distinct patients among the candidate rows, none of them in ``exclude``."""
    owners = patients[candidates]
    chosen = rng.choice(np.setdiff1d(np.unique(owners), exclude), k, replace=False)
    return np.array([rng.choice(candidates[owners == p]) for p in chosen])


def kshot_macro_auc(ctx: EvalContext, x: dict, y: dict, columns: list[int], k: int, seed: int) -> float:
    """Macro test AUC over ``columns`` of per-finding probes, each trained on K positive and K other negative
    patients (one image each) drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    patients = ctx.patients(ctx.rows("train"))
    values = []
    for j in columns:
        positives = draw_shots(rng, np.flatnonzero(y["train"][:, j] == 1), patients, k)
        negatives = draw_shots(rng, np.flatnonzero(y["train"][:, j] == 0), patients, k, exclude=patients[positives])
        rows = np.concatenate([positives, negatives])
        known_val, known_test = np.isin(y["val"][:, j], (0, 1)), np.isin(y["test"][:, j], (0, 1))
        probe = fit_binary_probe(x["train"][rows], y["train"][rows, j], x["val"][known_val],
                                 y["val"][known_val, j], seed)
        values.append(roc_auc(y["test"][known_test, j], probe.decision_function(x["test"][known_test])))
    return float(np.mean(values)) if values else float("nan")


def fraction_macro_auc(ctx: EvalContext, x: dict, y: dict, columns: list[int], fraction: float,
                       seed: int) -> tuple[float, int]:
    """(Macro test AUC over ``columns`` of probes trained on a random ``fraction`` of training patients,
    the number of those findings the fraction could not fit and that score as chance)."""
    patients = ctx.patients(ctx.rows("train"))
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(unique, max(1, int(round(fraction * len(unique)))), replace=False)
    scores, _ = probe_scores(ctx, x, y, train_rows=np.flatnonzero(np.isin(patients, chosen)), seed=seed)
    scores = scores[:, columns]
    unfit = int(np.isnan(scores).all(0).sum())
    return macro_auc(y["test"][:, columns], np.nan_to_num(scores, nan=0.0)), unfit


@TASKS.register("kshot", "K-shot (K in 1..16) and 1/10/100% data-fraction linear probes over seeds")
def kshot(ctx: EvalContext) -> dict:
    shots = [int(k) for k in ctx.option_list("shots", SHOTS)]
    fractions = [float(f) for f in ctx.option_list("fractions", FRACTIONS)]
    seeds = [ctx.seed + s for s in range(int(ctx.option("seeds", N_SEEDS)))]
    x, y = standardised(ctx)
    shot_columns = kshot_findings(ctx, y, max(shots, default=1))
    fraction_columns = [j for j in range(len(ctx.label_names))
                        if two_class(y["train"][:, j]) and two_class(y["test"][:, j])]
    out: dict = {"seeds": seeds, "kshot_findings": [ctx.label_names[j] for j in shot_columns],
                 "fraction_findings": [ctx.label_names[j] for j in fraction_columns], "kshot": {}, "fraction": {}}
    if shots and not shot_columns:
        out["kshot_skipped"] = f"no finding has {max(shots)} positive and {max(shots)} negative training patients"
        if not (fractions and fraction_columns):
            raise TaskSkipped(out["kshot_skipped"])
        shots = []
    for k in shots:
        runs = [kshot_macro_auc(ctx, x, y, shot_columns, k, s) for s in seeds]
        out["kshot"][str(k)] = {**mean_std(runs), "per_seed": runs}
    for f in fractions:
        runs, unfit = zip(*(fraction_macro_auc(ctx, x, y, fraction_columns, f, s) for s in seeds), strict=True)
        out["fraction"][str(f)] = {**mean_std(runs), "per_seed": list(runs), "n_unfit": list(unfit)}
    last = out["kshot"][str(max(shots))]["mean"] if shots else float("nan")
    return {**out, "macro_auc": last}
