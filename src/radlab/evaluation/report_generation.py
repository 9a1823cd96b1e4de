"""Retrieval-based report generation: each test query gets the report of its nearest training neighbour.

``via``: ``image`` (nearest training image by frozen features; any encoder), ``joint`` (image embedding
against training report embeddings; needs a text tower), ``text`` (findings section against training
findings, answering with that study's impression; text-only data). Scored with corpus BLEU-4, ROUGE-L and
a clinical F1: positive findings of generated vs reference text from radlab's report labeller
(``radlab.data.labeller.label_report``), or, where that labeller is absent, the records' own labels of the
neighbour vs the query (``clinical_f1_source`` says which).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from radlab.data.taxonomy import FINDING_NAMES
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.crossmodal import first_per_study, study_ids
from radlab.evaluation.knn import normalise
from radlab.evaluation.metrics import bleu_from_stats, bleu_stats, f1_binary, rouge_l
from radlab.evaluation.retrieval import chunked_topk


def report_labeller() -> Callable[[str], object] | None:
    try:
        from radlab.data.labeller import label_report
    except ImportError:
        return None
    return label_report


def positives(labeller: Callable[[str], object], texts: list[str]) -> np.ndarray:
    """[N, findings] positives; the labeller returns a dict or an object with a ``labels`` dict."""
    out = np.zeros((len(texts), len(FINDING_NAMES)), dtype=bool)
    for i, text in enumerate(texts):
        result = labeller(text)
        labels: dict[str, float] = getattr(result, "labels", result)  # type: ignore[assignment]
        for name, value in labels.items():
            if name in FINDING_NAMES and value == 1:
                out[i, FINDING_NAMES.index(name)] = True
    return out


def neighbours(ctx: EvalContext, via: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(query rows, neighbour rows among training rows, text column) for the chosen ``via``."""
    texts = np.array([bool(t.strip()) for t in ctx.table.texts()])
    if via == "text":
        if not ctx.encoder.has_text:
            raise TaskSkipped("via=text needs a text tower")
        frame = ctx.table.frame
        has = (frame["findings"].str.strip() != "").to_numpy() & (frame["impression"].str.strip() != "").to_numpy()
        rows = {s: ctx.text_rows(s) for s in ("train", "test")}
        rows = {s: r[has[r]] for s, r in rows.items()}
        rows = {s: r[first_per_study(study_ids(ctx, r))] for s, r in rows.items()}
        emb = {s: ctx.text_features([str(t) for t in frame["findings"].to_numpy()[r]]) for s, r in rows.items()}
        column = "impression"
    else:
        ctx.require_images(("train", "test"))
        rows = {s: ctx.rows(s)[texts[ctx.rows(s)]] for s in ("train", "test")}
        if via == "image":
            feats = {s: ctx.features.get(ctx.encoder, ctx.table, r, "pooled", ctx.batch_size) for s, r in rows.items()}
            center = feats["train"].mean(0, keepdims=True)
            emb = {s: normalise(v - center) for s, v in feats.items()}
        elif via == "joint":
            train = rows["train"][first_per_study(study_ids(ctx, rows["train"]))]
            rows["train"] = train
            emb = {"test": ctx.features.get(ctx.encoder, ctx.table, rows["test"], "embedding", ctx.batch_size),
                   "train": ctx.text_features(ctx.table.frame["report"].to_numpy()[train].astype(str).tolist())}
        else:
            raise ValueError(f"via must be 'image', 'joint' or 'text', got {via!r}")
        column = "report"
    if not len(rows["train"]) or not len(rows["test"]):
        raise TaskSkipped(f"no training or test queries with text for via={via}")
    _, idx = chunked_topk(emb["test"], emb["train"], 1)
    return rows["test"], rows["train"][idx[:, 0]], column


def train_rows(ctx: EvalContext, via: str) -> np.ndarray:
    return ctx.text_rows("train") if via == "text" else ctx.rows("train")


def most_common_baseline(references: list[str], train_texts: list[str]) -> dict:
    """Scores of answering every query with the most frequent training text (no encoder at all)."""
    texts = [t for t in train_texts if t.strip()]
    if not texts:
        return {}
    values, counts = np.unique(np.array(texts, dtype=object), return_counts=True)
    constant = str(values[counts.argmax()])
    stats = np.stack([bleu_stats(r, constant) for r in references])
    return {"text": constant, "bleu4": bleu_from_stats(stats.sum(0)),
            "rouge_l": float(np.mean([rouge_l(r, constant) for r in references]))}


@TASKS.register("report_generation", "nearest-training-report generation: BLEU-4, ROUGE-L, clinical F1, with CIs")
def report_generation(ctx: EvalContext) -> dict:
    has_images = len(ctx.rows("train")) > 0 and len(ctx.rows("test")) > 0
    via = ctx.option("via", "image" if has_images else "text")
    queries, found, column = neighbours(ctx, via)
    text = ctx.table.frame[column].to_numpy().astype(str)
    references, generated = text[queries].tolist(), text[found].tolist()
    stats = np.stack([bleu_stats(r, g) for r, g in zip(references, generated, strict=True)])
    rouge = np.array([rouge_l(r, g) for r, g in zip(references, generated, strict=True)])
    labeller = report_labeller()
    if labeller is not None:
        truth, predicted, source = positives(labeller, references), positives(labeller, generated), "labeller"
    else:
        labels = ctx.table.labels(list(FINDING_NAMES))
        truth, predicted, source = labels[queries] == 1, labels[found] == 1, "record_labels"
    patients = ctx.patients(queries)
    baseline = most_common_baseline(references, text[train_rows(ctx, via)].tolist())
    present = truth.any(0) | predicted.any(0)
    per_finding = {n: f1_binary(truth[:, j], predicted[:, j]) for j, n in enumerate(FINDING_NAMES) if present[j]}
    return {
        "via": via, "section": column, "n_test": int(len(queries)),
        "bleu4": bleu_from_stats(stats.sum(0)),
        "bleu4_ci": ctx.interval("bleu4", lambda i: bleu_from_stats(stats[i].sum(0)), patients),
        "rouge_l": float(rouge.mean()),
        "rouge_l_ci": ctx.interval("rouge_l", lambda i: float(rouge[i].mean()), patients),
        "clinical_f1": f1_binary(truth, predicted),
        "clinical_f1_ci": ctx.interval("clinical_f1", lambda i: f1_binary(truth[i], predicted[i]), patients),
        "clinical_f1_macro": float(np.mean(list(per_finding.values()))) if per_finding else float("nan"),
        "clinical_f1_per_finding": per_finding, "clinical_f1_source": source,
        "most_common_report_baseline": baseline,
        "examples": [{"reference": r, "generated": g} for r, g in zip(references[:3], generated[:3], strict=True)],
    }
