"""Label-efficient probes: K positive and K other negative patients per finding (K-shot), and fractions of the
training patients; every setting repeated over seeds and reported as mean and standard deviation of macro AUC,
with a patient-bootstrap interval of that mean.

Every setting averages the same findings, so a curve over K or over fractions measures the probe, not which
findings happened to be drawable: K-shot uses the findings whose training patients always allow max(K)
positive and max(K) other negative patients; the fractions use the linear probe's findings, and a finding a
sampled fraction has no positives (or no negatives) for scores as chance (a constant score, AUC 0.5), counted
in ``n_unfit``. When no finding allows max(K), the K-shot curve is left out (``kshot_skipped`` says why) and
the fractions still run.

Each probe picks its regularisation C by validation AUC (``linear_probe.fit_binary_probe``): on the whole
validation split by default (``validation: full``), or, with ``validation: kshot``, on K positive and K other
negative validation patients drawn with the same seed (fewer where the split has fewer): a K-shot user has no
large labelled validation set, and choosing C on one flatters the few-shot curve (Silva-Rodriguez et al., "A
closer look at the few-shot adaptation of large vision-language models", CVPR 2024).

The SD is over seeds (which patients were drawn) on the one test set; the interval (``macro_auc_ci``) is over
test patients, resampled as every interval here is, of the mean over seeds with each seed's probes held fixed.
The draws depend on the labels and the seed only, so two encoders evaluated together train on the same patients
and ``--compare`` pairs the two means (``kshot/K=<K>/macro_auc``, ``kshot/fraction=<F>/macro_auc``).
"""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import fit_binary_probe, probe_scores, standardised, two_class
from radlab.evaluation.metrics import macro_auc
from radlab.evaluation.stats import Statistic, mean_std

SHOTS = (1, 2, 4, 8, 16)
FRACTIONS = (0.01, 0.1, 1.0)
N_SEEDS = 5
VALIDATION = ("full", "kshot")  # where K-shot probes choose C (module docstring)


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
    return np.array([rng.choice(candidates[owners == p]) for p in chosen], dtype=np.int64)


def shot_rows(rng: np.random.Generator, labels: np.ndarray, patients: np.ndarray, k: int) -> np.ndarray:
    """Rows of K positive and K other negative patients (one image each) of one finding's ``labels``; fewer of a
    class whose patients number fewer than K."""
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    positives = draw_shots(rng, positive, patients, min(k, len(np.unique(patients[positive]))))
    others = np.setdiff1d(np.unique(patients[negative]), patients[positives])
    negatives = draw_shots(rng, negative, patients, min(k, len(others)), exclude=patients[positives])
    return np.concatenate([positives, negatives])


def kshot_scores(ctx: EvalContext, x: dict, y: dict, columns: list[int], k: int, seed: int,
                 validation: str = "full") -> np.ndarray:
    """Test scores [N_test, len(columns)] of per-finding probes, each trained on K positive and K other negative
    patients (one image each) drawn with ``seed``, C chosen on the whole validation split or on K + K of its
    patients (``validation``)."""
    rng, val_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])  # shots alike either way
    patients, val_patients = ctx.patients(ctx.rows("train")), ctx.patients(ctx.rows("val"))
    scores = np.empty((len(x["test"]), len(columns)))
    for i, j in enumerate(columns):
        rows = shot_rows(rng, y["train"][:, j], patients, k)
        val = (shot_rows(val_rng, y["val"][:, j], val_patients, k) if validation == "kshot"
               else np.flatnonzero(np.isin(y["val"][:, j], (0, 1))))
        probe = fit_binary_probe(x["train"][rows], y["train"][rows, j], x["val"][val], y["val"][val, j], seed)
        scores[:, i] = probe.decision_function(x["test"])
    return scores


def fraction_scores(ctx: EvalContext, x: dict, y: dict, columns: list[int], fraction: float,
                    seed: int) -> tuple[np.ndarray, int]:
    """(Test scores [N_test, len(columns)] of probes trained on a random ``fraction`` of training patients, 0 for
    the findings the fraction could not fit, so they score as chance; the number of those findings)."""
    patients = ctx.patients(ctx.rows("train"))
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(unique, max(1, int(round(fraction * len(unique)))), replace=False)
    scores, _ = probe_scores(ctx, x, y, train_rows=np.flatnonzero(np.isin(patients, chosen)), seed=seed)
    scores = scores[:, columns]
    return np.nan_to_num(scores, nan=0.0), int(np.isnan(scores).all(0).sum())


def ranked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Rows annotated 0/1, whether each is positive, the rank of its score among their distinct scores)."""
    rows = np.flatnonzero(np.isin(labels, (0, 1)))
    _, rank = np.unique(scores[rows], return_inverse=True)
    return rows, labels[rows] == 1, rank


def drawn_auc(drawn: np.ndarray, rows: np.ndarray, positive: np.ndarray, rank: np.ndarray) -> float:
    """``metrics.roc_auc`` of the rows ``ranked`` gave on a resample drawing row i ``drawn[i]`` times (each
    positive-negative pair counted once per pair of copies, ties one half); NaN if it lacks a class."""
    weight = drawn[rows].astype(np.float64)
    pos, neg = np.bincount(rank, weight * positive), np.bincount(rank, weight * ~positive)
    n_pos, n_neg = pos.sum(), neg.sum()
    if not n_pos or not n_neg:
        return float("nan")
    return float(pos @ (np.cumsum(neg) - neg / 2) / (n_pos * n_neg))


def seed_mean_auc(labels: np.ndarray, runs: list[np.ndarray]) -> Statistic:
    """Statistic of test-row indices: the mean over seeds of the strict macro AUC of each seed's scores
    [N_test, F] in ``runs`` against ``labels`` [N_test, F]. Every seed and finding is ranked once and a resample
    only counts its draws (``drawn_auc``): sorting per resample, seed, finding and setting would dominate."""
    parts = [ranked(labels[:, j], scores[:, j]) for scores in runs for j in range(labels.shape[1])]

    def statistic(idx: np.ndarray) -> float:
        drawn = np.bincount(idx, minlength=len(labels))
        aucs = np.array([drawn_auc(drawn, *part) for part in parts]).reshape(len(runs), labels.shape[1])
        return float(aucs.mean(1).mean())

    return statistic


def setting_report(ctx: EvalContext, name: str, labels: np.ndarray, runs: list[np.ndarray],
                   findings: list[str]) -> dict:
    """One K or fraction: mean and SD over seeds of the macro AUC, each seed's, and the patient-bootstrap
    interval of the mean over seeds (kept as ``<name>/macro_auc`` for ``--compare``)."""
    per_seed = [macro_auc(labels, scores) for scores in runs]
    ci = ctx.interval(f"{name}/macro_auc", seed_mean_auc(labels, runs), ctx.patients(ctx.rows("test")),
                      over=findings)
    return {**mean_std(per_seed), "per_seed": per_seed, "macro_auc_ci": ci}


@TASKS.register("kshot", "K-shot (K in 1..16) and 1/10/100% data-fraction linear probes over seeds")
def kshot(ctx: EvalContext) -> dict:
    shots = [int(k) for k in ctx.option_list("shots", SHOTS)]
    fractions = [float(f) for f in ctx.option_list("fractions", FRACTIONS)]
    seeds = [ctx.seed + s for s in range(int(ctx.option("seeds", N_SEEDS)))]
    validation = str(ctx.option("validation", "full"))
    if validation not in VALIDATION:
        raise ValueError(f"kshot.validation must be one of {VALIDATION}, got {validation!r}")
    x, y = standardised(ctx)
    shot_columns = kshot_findings(ctx, y, max(shots, default=1))
    fraction_columns = [j for j in range(len(ctx.label_names))
                        if two_class(y["train"][:, j]) and two_class(y["test"][:, j])]
    out: dict = {"seeds": seeds, "validation": validation, "kshot_findings": [ctx.label_names[j] for j in shot_columns],
                 "fraction_findings": [ctx.label_names[j] for j in fraction_columns], "kshot": {}, "fraction": {}}
    if shots and not shot_columns:
        out["kshot_skipped"] = f"no finding has {max(shots)} positive and {max(shots)} negative training patients"
        if not (fractions and fraction_columns):
            raise TaskSkipped(out["kshot_skipped"])
        shots = []
    for k in shots:
        runs = [kshot_scores(ctx, x, y, shot_columns, k, s, validation) for s in seeds]
        out["kshot"][str(k)] = setting_report(ctx, f"K={k}", y["test"][:, shot_columns], runs, out["kshot_findings"])
    for f in fractions:
        runs, unfit = zip(*(fraction_scores(ctx, x, y, fraction_columns, f, s) for s in seeds), strict=True)
        out["fraction"][str(f)] = {**setting_report(ctx, f"fraction={f}", y["test"][:, fraction_columns], list(runs),
                                                    out["fraction_findings"]), "n_unfit": list(unfit)}
    if not shots:
        return {**out, "macro_auc": float("nan")}
    last = out["kshot"][str(max(shots))]
    return {**out, "macro_auc": last["mean"], "macro_auc_ci": last["macro_auc_ci"]}
