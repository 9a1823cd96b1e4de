"""Text probe: how well a text tower's frozen report features encode the findings; the text side of the
linear probe, so text towers can be compared (random init, report-only MLM, image-text objectives, public ones).

One report per study, in every split, on text-only data too. Per finding, ``linear_probe``'s class-balanced
logistic regression (C chosen on the validation split) on standardised features: by default the text tower's
pooled features before projection (``kind: pooled``), or the joint-space embeddings (``kind: embedding``).
Test AUC per finding, macro AUC with a patient-bootstrap interval.

What it measures depends on where the labels came from: with expert tags (IU X-ray's MeSH codes) it is how
linearly the tower encodes the findings a radiologist coded; with labels a labeller extracted from these same
reports (MIMIC-CXR's CheXpert labels, radlab's labeller) it is how linearly it encodes that labeller's reading.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler

from radlab.evaluation.context import SPLITS, TASKS, EvalContext, TaskSkipped
from radlab.evaluation.crossmodal import first_per_study, study_ids
from radlab.evaluation.features import TEXT_KINDS
from radlab.evaluation.linear_probe import C_GRID, auc_report, probe_scores


def report_rows(ctx: EvalContext, split: str) -> np.ndarray:
    """Rows of a split with a report, the first of each study (a study's images share its report)."""
    rows = ctx.text_rows(split)
    return rows[first_per_study(study_ids(ctx, rows))]


@TASKS.register("text_probe", "per-finding logistic regression on frozen report features; test AUC with CI")
def text_probe(ctx: EvalContext) -> dict:
    if not ctx.encoder.has_text:
        raise TaskSkipped("the text probe needs a text tower")
    kind = ctx.option("kind", "pooled")
    if kind not in TEXT_KINDS:
        raise ValueError(f"text_probe.kind must be one of {TEXT_KINDS}, got {kind!r}")
    rows = {s: report_rows(ctx, s) for s in SPLITS}
    empty = [s for s, r in rows.items() if not len(r)]
    if empty:
        raise TaskSkipped(f"no reports in split(s) {empty}")
    texts = ctx.table.texts()
    features = {s: ctx.text_features([texts[i] for i in r], kind) for s, r in rows.items()}
    scaler = StandardScaler().fit(features["train"])
    x = {s: scaler.transform(v) for s, v in features.items()}
    labels = ctx.table.labels(ctx.label_names)
    y = {s: labels[r] for s, r in rows.items()}
    scores, fitted = probe_scores(ctx, x, y)
    if not fitted:
        raise TaskSkipped("no finding has both classes among the train and test reports")
    return {**auc_report(ctx, y["test"], scores, fitted, rows["test"]), "kind": kind,
            "n_reports": {s: int(len(r)) for s, r in rows.items()}, "c_grid": list(C_GRID)}
