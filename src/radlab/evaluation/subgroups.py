"""Subgroup performance: a task's test macro AUC within each group of sex, age band, view or source, each with
a patient-bootstrap interval, and the gap between the best and the worst group with its own interval.

An encoder that reads sex and age well (RAD-DINO's point) can also be one whose findings probe works better for
some patients than others; an average over the test set hides that. For one attribute, the groups are its
values in the test rows (ages cut into bands at ``age_edges``, default 40, 60 and 80 years: "<40", "40-59",
"60-79", ">=80"); rows without the attribute (unknown sex or age) belong to no group. A group with fewer than
``min_patients`` patients gets counts only. The remaining groups are scored on the same findings, those with
positives and negatives in every one of them, so their AUCs differ by who the patients are, not by which
findings are averaged. Resamples draw test patients (all their rows) as every interval here does, and a group's
statistic takes the drawn rows that fall in it; the gap is the best minus the worst group of the point estimate
on the same resamples. That pair was chosen, by the data, from all G(G-1)/2 pairs of the G scored groups, so its
interval is Bonferroni-adjusted for them (level 1 - 0.05 / pairs; 95% for two groups): a 95% interval of the
chosen pair excluded 0 in 27% of 150 simulated data sets with four groups of equal performance, the adjusted one
in 4% (two groups: 6%). The gap's point estimate still leans high (the largest of several noisy differences). Each group's macro
AUC and each gap is kept for ``--compare`` (as ``TASK/subgroups/ATTRIBUTE=GROUP/macro_auc`` and
``TASK/subgroups/ATTRIBUTE/gap``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radlab.evaluation.context import EvalContext
from radlab.evaluation.metrics import macro_auc
from radlab.evaluation.stats import Statistic

ATTRIBUTES = ("sex", "age", "view", "source")
TASKS_WITH_SUBGROUPS = ("linear_probe", "knn", "finetune", "text_probe", "zero_shot")  # the macro-AUC tasks
DEFAULT_AGE_EDGES = (40, 60, 80)
DEFAULT_MIN_PATIENTS = 10


def band_names(edges: Sequence[float]) -> list[str]:
    """Age band names in order ("<40", "40-59", ..., ">=80") for whole-year ``edges``."""
    if not edges or any(float(e) != int(float(e)) for e in edges):
        raise ValueError(f"subgroups: age_edges must be whole years, got {list(edges)}")
    cuts = sorted(int(float(e)) for e in edges)
    return [f"<{cuts[0]}", *(f"{lo}-{hi - 1}" for lo, hi in zip(cuts, cuts[1:], strict=False)), f">={cuts[-1]}"]


def age_bands(ages: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Each age's band (``band_names``); "" where the age is unknown."""
    cuts = sorted(float(e) for e in edges)
    bands = np.array(band_names(edges), dtype=object)[np.searchsorted(cuts, np.nan_to_num(ages), side="right")]
    return np.where(np.isnan(ages), "", bands).astype(str)


def group_values(ctx: EvalContext, rows: np.ndarray, attribute: str,
                 edges: Sequence[float]) -> tuple[np.ndarray, list[str]]:
    """Each row's group for ``attribute`` ("" where unknown), and the groups in reading order."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"subgroups: unknown attribute {attribute!r}; choose from {ATTRIBUTES}")
    column = ctx.table.frame[attribute].iloc[rows]
    if attribute == "age":
        values = age_bands(column.to_numpy(dtype=np.float64, na_value=np.nan), edges)
        return values, [b for b in band_names(edges) if b in set(values)]
    values = column.fillna("").astype(str).to_numpy()
    return values, sorted(set(values) - {""})


def two_class_findings(y: np.ndarray, masks: list[np.ndarray]) -> list[int]:
    """Columns of ``y`` with a positive and a negative within every row mask."""
    return [k for k in range(y.shape[1]) if all((y[m, k] == 1).any() and (y[m, k] == 0).any() for m in masks)]


def group_statistic(y: np.ndarray, s: np.ndarray, member: np.ndarray) -> Statistic:
    """Macro AUC (strict: a resample missing a class of one finding is dropped) over the rows in ``member``."""
    return lambda idx: macro_auc(y[idx][member[idx]], s[idx][member[idx]], strict=True)


def attribute_report(ctx: EvalContext, y: np.ndarray, s: np.ndarray, names: list[str], patients: np.ndarray,
                     groups: np.ndarray, order: list[str], attribute: str, min_patients: int) -> dict:
    """Counts of every group (``order``: the group names in the order to list them; rows of ``groups`` outside
    it are unknown); macro AUC with interval for the groups large enough; the best-worst gap."""
    counts = {g: {"n_images": int((groups == g).sum()), "n_patients": int(len(set(patients[groups == g])))}
              for g in order}
    scored = [g for g, c in counts.items() if c["n_patients"] >= min_patients]
    out: dict = {"groups": counts, "n_unknown": int((~np.isin(groups, order)).sum()), "min_patients": min_patients}
    if len(scored) < 2:
        return {**out, "skipped": f"fewer than two groups with at least {min_patients} patients"}
    columns = two_class_findings(y, [groups == g for g in scored])
    if not columns:
        return {**out, "skipped": "no finding has positives and negatives in every group"}
    findings = [names[k] for k in columns]
    yc, sc = y[:, columns], s[:, columns]
    statistics = {g: group_statistic(yc, sc, groups == g) for g in scored}
    for g in scored:
        counts[g]["macro_auc_ci"] = ctx.interval(f"subgroups/{attribute}={g}/macro_auc", statistics[g], patients,
                                                 over=findings)
        counts[g]["macro_auc"] = counts[g]["macro_auc_ci"]["estimate"]
    ranked = sorted(scored, key=lambda g: counts[g]["macro_auc"])
    worst, best = ranked[0], ranked[-1]
    pairs = len(scored) * (len(scored) - 1) // 2
    gap = ctx.interval(f"subgroups/{attribute}/gap", lambda idx: statistics[best](idx) - statistics[worst](idx),
                       patients, over=[f"{attribute}={best}", f"{attribute}={worst}", *findings],
                       level=1 - 0.05 / pairs)
    return {**out, "findings": findings, "best": best, "worst": worst, "gap": gap["estimate"], "gap_ci": gap,
            "gap_pairs": pairs}


def gap_level_note(report: dict) -> str:
    """How the gap's interval was adjusted, for the console and the report ("" for two groups, a 95% one)."""
    pairs = report.get("gap_pairs", 1)
    return f" ({report['gap_ci']['level']:.1%} interval: Bonferroni over {pairs} pairs)" if pairs > 1 else ""


def subgroup_report(ctx: EvalContext, y: np.ndarray, s: np.ndarray, names: list[str], rows: np.ndarray) -> dict:
    """Per attribute in the task's ``subgroups`` option, ``attribute_report`` over the test ``rows`` (the table
    rows of ``y``/``s``, whose columns are ``names``); {} when the option is not set."""
    attributes = ctx.option_list("subgroups", None)
    if not attributes:
        return {}
    edges = ctx.option_list("age_edges", DEFAULT_AGE_EDGES)
    min_patients = int(ctx.option("min_patients", DEFAULT_MIN_PATIENTS))
    patients = ctx.patients(rows)
    return {"subgroups": {a: attribute_report(ctx, y, s, names, patients, *group_values(ctx, rows, a, edges), a,
                                              min_patients) for a in attributes}}
