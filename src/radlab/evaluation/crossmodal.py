"""Retrieval tasks in the joint space, test split, both directions, R@1/5/10/50 and median rank.

``retrieval``: images <-> reports (one report per study) and images <-> sentences (a sentence's images are
its study's images), scored with the ``similarity`` option (``radlab.evaluation.similarity``; ``both`` is
GLoRIA's own retrieval for encoders with a word-region matcher). ``text_retrieval``: findings section <->
impression section of the same study, which runs on text-only data (the text tower alone).
"""

from __future__ import annotations

import numpy as np

from radlab.data.dataset import study_keys
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.metrics import expected_hits, recall_at_k
from radlab.evaluation.retrieval import correct_key_positions, split_sentences
from radlab.evaluation.similarity import combine, similarity_kind


def study_ids(ctx: EvalContext, rows: np.ndarray) -> np.ndarray:
    """Each row's study (``data.dataset.study_keys``: its patient's study_id, else its own id), as strings."""
    return study_keys(ctx.table.frame.iloc[rows]).to_numpy().astype(str)


def first_per_study(studies: np.ndarray) -> np.ndarray:
    _, first = np.unique(studies, return_index=True)
    return np.sort(first)


def direction(ctx: EvalContext, name: str, queries: np.ndarray, keys: np.ndarray, q_groups: np.ndarray,
              k_groups: np.ndarray, q_patients: np.ndarray, scores: np.ndarray | None = None) -> dict:
    above, tied, correct = correct_key_positions(queries, keys, q_groups, k_groups, int(ctx.option("chunk", 4096)),
                                                 scores)
    out = {**recall_at_k(above, tied, tied_correct=correct), "n_queries": int(len(above)), "n_keys": int(len(keys))}
    for k in (1, 10):
        hits = expected_hits(above, tied, k, correct)
        out[f"R@{k}_ci"] = ctx.interval(f"{name}/R@{k}", lambda i, h=hits: float(h[i].mean()), q_patients)
    return out


@TASKS.register("retrieval", "image<->report and image<->sentence retrieval: R@1/5/10/50, median rank, CIs")
def retrieval(ctx: EvalContext) -> dict:
    if not ctx.encoder.has_text:
        raise TaskSkipped("retrieval needs a text tower")
    ctx.require_images(("test",))
    kind = similarity_kind(ctx)
    rows = ctx.rows("test")
    reports = np.array(ctx.table.texts(), dtype=object)[rows]
    keep = np.array([bool(r.strip()) for r in reports])
    rows, reports = rows[keep], reports[keep]
    if not len(rows):
        raise TaskSkipped("no test image has a report")
    images = ctx.features.get(ctx.encoder, ctx.table, rows, "embedding", ctx.batch_size)
    studies, patients = study_ids(ctx, rows), ctx.patients(rows)
    first = first_per_study(studies)
    report_texts = [str(r) for r in reports[first]]
    sentences, s_study, s_patient = [], [], []
    for j in first:
        for sentence in split_sentences(str(reports[j])):
            sentences.append(sentence)
            s_study.append(studies[j])
            s_patient.append(patients[j])
    # word-region scores of every image against reports and sentences at once: one image-tower pass
    local = None if kind == "global" else ctx.features.local(ctx.encoder, ctx.table, rows,
                                                             report_texts + sentences, ctx.batch_size)

    def both_ways(level: str, texts: list[str], columns: slice, t_study: np.ndarray, t_patient: np.ndarray,
                  queries: np.ndarray) -> dict:
        """Images (the ``queries`` rows) -> texts and texts -> all images; ``columns`` are the texts' in ``local``."""
        embedded = ctx.text_features(texts)
        scores = None if local is None else combine(images @ embedded.T, local[:, columns], kind)
        return {"image_to_text": direction(ctx, f"{level}/i2t", images[queries], embedded, studies[queries], t_study,
                                           patients[queries], None if scores is None else scores[queries]),
                "text_to_image": direction(ctx, f"{level}/t2i", embedded, images, t_study, studies, t_patient,
                                           None if scores is None else scores.T)}

    n_reports = len(report_texts)
    out = {"similarity": kind, "report": both_ways("report", report_texts, slice(0, n_reports), studies[first],
                                                   patients[first], np.ones(len(rows), dtype=bool))}
    if sentences:
        s_study_arr = np.array(s_study)
        out["sentence"] = both_ways("sentence", sentences, slice(n_reports, None), s_study_arr, np.array(s_patient),
                                    np.isin(studies, s_study_arr))
    out["mean_R@1"] = float(np.mean([out["report"][d]["R@1"] for d in ("image_to_text", "text_to_image")]))
    return out


@TASKS.register("text_retrieval", "findings<->impression retrieval with the text tower (text-only data)")
def text_retrieval(ctx: EvalContext) -> dict:
    if not ctx.encoder.has_text:
        raise TaskSkipped("text retrieval needs a text tower")
    frame = ctx.table.frame
    rows = ctx.text_rows("test")
    rows = rows[first_per_study(study_ids(ctx, rows))]
    findings, impressions = frame["findings"].to_numpy()[rows], frame["impression"].to_numpy()[rows]
    keep = np.array([bool(str(f).strip()) and bool(str(i).strip()) for f, i in zip(findings, impressions, strict=True)])
    rows = rows[keep]
    if len(rows) < 2:
        raise TaskSkipped("fewer than two test studies have both findings and impression")
    studies, patients = study_ids(ctx, rows), ctx.patients(rows)
    f_emb = ctx.text_features([str(t) for t in frame["findings"].to_numpy()[rows]])
    i_emb = ctx.text_features([str(t) for t in frame["impression"].to_numpy()[rows]])
    out = {"findings_to_impression": direction(ctx, "f2i", f_emb, i_emb, studies, studies, patients),
           "impression_to_findings": direction(ctx, "i2f", i_emb, f_emb, studies, studies, patients)}
    out["mean_R@1"] = float(np.mean([v["R@1"] for v in out.values()]))
    return out
