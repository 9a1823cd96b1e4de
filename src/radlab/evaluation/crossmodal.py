"""Retrieval tasks in the joint space, test split, both directions, R@1/5/10/50 and median rank.

``retrieval``: images <-> reports (one report per study) and images <-> sentences, scored with the
``similarity`` option (``radlab.evaluation.similarity``; ``both`` is GLoRIA's own retrieval for encoders with a
word-region matcher). ``text_retrieval``: findings section <-> impression section of the same study, which runs
on text-only data (the text tower alone).

Texts are keys by content (``normalise_text``): identical texts of several studies ("No pneumothorax.") are one
key, correct for every study that contains it, and one query, whose correct keys are the images (or sections)
of all those studies. So an encoder that embeds each image as its own report scores R@1 = 1, however often
reports repeat; otherwise the copies would tie and cap it at chance among them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from radlab.data.dataset import study_keys
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.metrics import expected_hits, recall_at_k
from radlab.evaluation.retrieval import correct_key_positions, membership, split_sentences
from radlab.evaluation.similarity import combine, similarity_kind


def study_ids(ctx: EvalContext, rows: np.ndarray) -> np.ndarray:
    """Each row's study (``data.dataset.study_keys``: its patient's study_id, else its own id), as strings."""
    return study_keys(ctx.table.frame.iloc[rows]).to_numpy().astype(str)


def first_per_study(studies: np.ndarray) -> np.ndarray:
    """Each study's first row, in row order (``study_index``)."""
    return study_index(studies)[0]


def normalise_text(text: str) -> str:
    """A text's content as a retrieval key: whitespace runs collapsed to one space, case folded, and trailing
    spaces and punctuation (``.,;:!?``) dropped; nothing else, so "No effusion" and "No pleural effusion" stay
    two texts."""
    return re.sub(r"\s+", " ", text).casefold().strip().rstrip(".,;:!? ")


def distinct_texts(per_study: Sequence[Sequence[str]]) -> tuple[list[str], sparse.csr_array]:
    """The studies' distinct texts (by ``normalise_text``), each once as first written (the one the tower
    embeds), and the [studies, texts] 0/1 matrix of which study contains which."""
    index: dict[str, int] = {}
    texts: list[str] = []
    pairs: set[tuple[int, int]] = set()
    for s, items in enumerate(per_study):
        for text in items:
            key = normalise_text(text)
            if key not in index:
                index[key] = len(texts)
                texts.append(text)
            pairs.add((s, index[key]))
    study, text = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2).T
    return texts, sparse.csr_array((np.ones(len(study), np.int64), (study, text)), shape=(len(per_study), len(texts)))


def study_index(studies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each study's first row, in row order; each row's study number in that order)."""
    _, first, inverse = np.unique(studies, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


def study_patients(patients: np.ndarray) -> sparse.csr_array:
    """[studies, patients] 0/1 matrix from each study's patient (patients numbered in sorted order)."""
    codes, inverse = np.unique(patients, return_inverse=True)
    return membership(inverse, len(codes))


def direction(ctx: EvalContext, name: str, queries: np.ndarray, keys: np.ndarray, relevant: sparse.csr_array,
              owners: sparse.csr_array, scores: np.ndarray | None = None) -> dict:
    """Recall of ``queries`` against ``keys`` (``relevant``: the correct ones, [Q, K]) with patient-bootstrap
    intervals. ``owners`` ([Q, patients] 0/1) gives each query's patients: an image's own, or every patient with
    a study containing the text. A query of m patients is split evenly among them (1/m each) and a resample
    weighs each patient by its draws: an image counts once per draw of its patient, as in every task; a shared
    text weighs its patients' mean draw count, 1 in expectation, so the resamples centre on the full-sample mean
    over distinct texts (counting a text once whenever any of its patients is drawn would favour common texts)."""
    above, tied, correct = correct_key_positions(queries, keys, relevant, int(ctx.option("chunk", 4096)), scores)
    out = {**recall_at_k(above, tied, tied_correct=correct), "n_queries": int(len(above)), "n_keys": int(len(keys))}
    pairs = sparse.coo_array(owners)
    order = np.lexsort((pairs.col, pairs.row))  # (query, patient) pairs in a fixed order, so comparisons pair up
    query, units = pairs.row[order], pairs.col[order]
    share = 1.0 / np.bincount(query, minlength=len(above))[query]
    for k in (1, 10):
        hits = expected_hits(above, tied, k, correct)
        out[f"R@{k}_ci"] = ctx.interval(f"{name}/R@{k}", lambda i, h=hits: float(h[query[i]] @ share[i] / share[i].sum()),
                                        units)
    return out


@TASKS.register("retrieval", "image<->report and image<->sentence retrieval: R@1/5/10/50, median rank, CIs")
def retrieval(ctx: EvalContext) -> dict:
    """Both levels and directions. Keys are distinct texts (``distinct_texts``): an image's correct keys are its
    study's report (its sentences); a text query's correct keys are the images of every study containing it."""
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
    patients = ctx.patients(rows)
    first, image_study = study_index(study_ids(ctx, rows))
    image_of_study, patient_of_study = membership(image_study, len(first)), study_patients(patients[first])
    image_patients = sparse.csr_array(image_of_study @ patient_of_study)
    levels = {"report": distinct_texts([[str(reports[j])] for j in first]),
              "sentence": distinct_texts([split_sentences(str(reports[j])) for j in first])}
    # word-region scores of every image against reports and sentences at once: one image-tower pass
    local = None if kind == "global" else ctx.features.local(ctx.encoder, ctx.table, rows, levels["report"][0]
                                                             + levels["sentence"][0], ctx.batch_size)
    out: dict = {"similarity": kind}
    offset = 0
    for level, (texts, contains) in levels.items():
        columns = slice(offset, offset + len(texts))
        offset += len(texts)
        if not texts:
            continue
        embedded = ctx.text_features(texts)
        relevant = sparse.csr_array(image_of_study @ contains)  # [images, texts]
        queries = np.flatnonzero(relevant.sum(axis=1) > 0)  # images whose study has a text at this level
        scores = None if local is None else combine(images @ embedded.T, local[:, columns], kind)
        out[level] = {
            "image_to_text": direction(ctx, f"{level}/i2t", images[queries], embedded, relevant[queries],
                                       image_patients[queries], None if scores is None else scores[queries]),
            "text_to_image": direction(ctx, f"{level}/t2i", embedded, images, sparse.csr_array(relevant.T),
                                       sparse.csr_array(contains.T @ patient_of_study),
                                       None if scores is None else scores.T)}
    out["mean_R@1"] = float(np.mean([out["report"][d]["R@1"] for d in ("image_to_text", "text_to_image")]))
    return out


@TASKS.register("text_retrieval", "findings<->impression retrieval with the text tower (text-only data)")
def text_retrieval(ctx: EvalContext) -> dict:
    """Distinct findings <-> distinct impressions (``distinct_texts``): a findings text's correct keys are the
    impressions of every study with that findings text, and the other way round."""
    if not ctx.encoder.has_text:
        raise TaskSkipped("text retrieval needs a text tower")
    frame = ctx.table.frame
    rows = ctx.text_rows("test")
    rows = rows[first_per_study(study_ids(ctx, rows))]
    findings = [str(t) for t in frame["findings"].to_numpy()[rows]]
    impressions = [str(t) for t in frame["impression"].to_numpy()[rows]]
    keep = np.array([bool(f.strip()) and bool(i.strip()) for f, i in zip(findings, impressions, strict=True)])
    if keep.sum() < 2:
        raise TaskSkipped("fewer than two test studies have both findings and impression")
    rows = rows[keep]
    f_texts, f_contains = distinct_texts([[f] for f, k in zip(findings, keep, strict=True) if k])
    i_texts, i_contains = distinct_texts([[i] for i, k in zip(impressions, keep, strict=True) if k])
    patient_of_study = study_patients(ctx.patients(rows))
    f_emb, i_emb = ctx.text_features(f_texts), ctx.text_features(i_texts)
    relevant = sparse.csr_array(f_contains.T @ i_contains)  # [findings, impressions]
    out = {"findings_to_impression": direction(ctx, "f2i", f_emb, i_emb, relevant,
                                               sparse.csr_array(f_contains.T @ patient_of_study)),
           "impression_to_findings": direction(ctx, "i2f", i_emb, f_emb, sparse.csr_array(relevant.T),
                                               sparse.csr_array(i_contains.T @ patient_of_study))}
    out["mean_R@1"] = float(np.mean([v["R@1"] for v in out.values()]))
    return out
