"""Zero-shot classification with no training on the evaluation data.

Text models score each finding by its positive against its negative prompt embedding (logit difference), in three prompt
modes (class names, a seeded ensemble of composed prompts, clinical descriptions). Label-supervised models
answer through their class prototypes; a class outside their label head is scored only when it is defined
from seen classes through the taxonomy: the max over seen descendants (a positive child implies its
parent), else the nearest seen ancestor. Multi-label: AUC per finding. Single-label: images with exactly
one positive finding, top-1 accuracy over the findings (a class derived from seen ones ties with them, so it takes
no part in top-1 decisions). Base-vs-new: macro AUC over seen and unseen classes.
Option ``similarity`` (global, local, both) picks the image-text similarity (``radlab.evaluation.similarity``):
``both`` is GLoRIA's own zero-shot for encoders with a word-region matcher.

Exclusive (``exclusive``): the "CheXpert 5x200" protocol of GLoRIA and MedCLIP, reported to compare with that
literature: up to ``exclusive_per_class`` (200) test images a class, drawn with the seed, each positive for
exactly one of ``exclusive_classes`` (atelectasis, cardiomegaly, consolidation, edema, pleural effusion) and
certainly negative for the others; top-1 accuracy over those classes with a patient-bootstrap interval. It is
the optimistic setting the reality-check paper warns about (balanced, exclusive, easy): the multi-label AUC
is the number to compare encoders by.
"""

from __future__ import annotations

import numpy as np
import torch

from radlab.data.taxonomy import FINDING_NAMES, ancestors
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import macro_statistics, per_finding, two_class
from radlab.evaluation.metrics import accuracy, roc_auc
from radlab.evaluation.prompts import PROMPT_MODES, prompts
from radlab.evaluation.similarity import combine, decision_scores, similarity_kind


def descendants(name: str) -> list[str]:
    return [f for f in FINDING_NAMES if name in ancestors(f)]


def class_vectors(ctx: EvalContext, names: list[str], mode: str) -> np.ndarray:
    """[K, 2, D]: averaged, re-normalised positive and negative prompt embeddings per finding."""
    out = []
    for name in names:
        pair = []
        for texts in prompts(name, mode, ctx.seed):
            mean = ctx.text_features(texts).mean(0)
            pair.append(mean / max(np.linalg.norm(mean), 1e-8))
        out.append(np.stack(pair))
    return np.stack(out)


def local_prompt_similarity(ctx: EvalContext, names: list[str], mode: str) -> np.ndarray:
    """[N, K, 2]: word-region similarity of each test image to each finding's positive and negative prompts,
    averaged over the prompts of each (as ``class_vectors`` averages their embeddings)."""
    sets = [texts for name in names for texts in prompts(name, mode, ctx.seed)]
    flat = [t for texts in sets for t in texts]
    local = ctx.features.local(ctx.encoder, ctx.table, ctx.rows("test"), flat, ctx.batch_size)
    ends = np.cumsum([len(texts) for texts in sets])
    means = [local[:, end - len(texts):end].mean(1) for texts, end in zip(sets, ends, strict=True)]
    return np.stack(means, axis=1).reshape(len(local), len(names), 2)


def prompt_scores(ctx: EvalContext, names: list[str], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(binary scores [N, K], class scores [N, K]: positive-prompt similarity). The binary score is the
    positive minus the negative prompt's similarity: it ranks images as the softmax P(positive) does, without
    the float32 softmax saturating at 1.0 and tying images whose similarity gaps differ by more than ~0.17.
    With ``similarity: local|both`` the word-region similarity replaces or joins the cosine
    (``radlab.evaluation.similarity``)."""
    kind = similarity_kind(ctx)
    images = ctx.image_features("test", kind="embedding")
    similarity = np.einsum("nd,kpd->nkp", images, class_vectors(ctx, names, mode))
    if kind != "global":
        similarity = combine(similarity, local_prompt_similarity(ctx, names, mode), kind)
    return similarity[..., 0] - similarity[..., 1], similarity[..., 0]


@torch.no_grad()
def prototype_logits(ctx: EvalContext) -> np.ndarray:
    head = ctx.encoder.label_head
    images = torch.from_numpy(ctx.image_features("test", kind=head.reads))
    return head(images.to(next(head.parameters()).device)).cpu().numpy()


def derived_from_seen(name: str, seen: list[str]) -> tuple[list[str], str] | None:
    """How an unseen class is scored from seen ones: (seen classes, "max" | "ancestor"), or None."""
    children = [d for d in descendants(name) if d in seen]
    if children:
        return children, "max"
    parents = [a for a in ancestors(name) if a in seen]
    return ([parents[0]], "ancestor") if parents else None


def prototype_scores(ctx: EvalContext, names: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    head = ctx.encoder.label_head
    logits = prototype_logits(ctx)
    scores = np.full((len(logits), len(names)), np.nan)
    definitions = {}
    for j, name in enumerate(names):
        if name in head.class_names:
            scores[:, j] = logits[:, head.class_names.index(name)]
            continue
        derived = derived_from_seen(name, head.class_names)
        if derived is not None:
            sources, how = derived
            scores[:, j] = logits[:, [head.class_names.index(s) for s in sources]].max(1)
            definitions[name] = f"{how}({', '.join(sources)})"
    return scores, definitions


def single_label(labels: np.ndarray, class_scores: np.ndarray, kind: str = "global") -> dict:
    """Top-1 accuracy on images with exactly one positive among the scored findings (``kind``: the similarity,
    for ``decision_scores``)."""
    usable = ~np.isnan(class_scores).any(0)
    y, s = labels[:, usable], class_scores[:, usable]
    one = ((y == 1).sum(1) == 1) & np.isin(y, (0, 1)).all(1)
    if usable.sum() < 2 or not one.any():
        return {"n": 0}
    truth = np.argmax(y[one] == 1, axis=1)
    return {"accuracy": accuracy(truth, decision_scores(s[one], kind).argmax(1)), "chance": 1.0 / int(usable.sum()),
            "n": int(one.sum())}


EXCLUSIVE_CLASSES = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion")


def exclusive_sample(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, class index): up to ``per_class`` rows a class that are positive for exactly that one of the
    columns and negative (0, not uncertain or unknown) for every other, drawn with ``seed``."""
    exclusive = np.isin(labels, (0, 1)).all(1) & ((labels == 1).sum(1) == 1)
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for k in range(labels.shape[1]):
        candidates = np.flatnonzero(exclusive & (labels[:, k] == 1))
        chosen = np.sort(rng.choice(candidates, min(per_class, len(candidates)), replace=False))
        rows.append(chosen)
        truth.append(np.full(len(chosen), k))
    return np.concatenate(rows), np.concatenate(truth)


def exclusive_accuracy(ctx: EvalContext, names: list[str], labels: np.ndarray, class_scores: np.ndarray,
                       kind: str = "global") -> dict:
    """The 5x200-style top-1 accuracy (module docstring) over the exclusive classes this encoder can score
    (``kind``: the similarity, for ``decision_scores`` over the drawn images)."""
    wanted = ctx.option_list("exclusive_classes", list(EXCLUSIVE_CLASSES))
    classes = [n for n in wanted if n in names and not np.isnan(class_scores[:, names.index(n)]).any()]
    if len(classes) < 2:
        return {"n": 0, "reason": f"fewer than two of {wanted} are evaluable and scored"}
    columns = [names.index(n) for n in classes]
    per_class = int(ctx.option("exclusive_per_class", 200))
    rows, truth = exclusive_sample(labels[:, columns], per_class, ctx.seed)
    if not len(rows):
        return {"n": 0, "reason": "no test image is positive for exactly one of the classes"}
    predicted = decision_scores(class_scores[np.ix_(rows, columns)], kind).argmax(1)
    ci = ctx.interval("exclusive_accuracy", lambda idx: accuracy(truth[idx], predicted[idx]),
                      ctx.patients(ctx.rows("test")[rows]), over=classes)
    counts = np.bincount(truth, minlength=len(classes)).tolist()
    return {"classes": classes, "per_class": per_class, "n_per_class": counts, "n": int(len(rows)),
            "accuracy": ci["estimate"], "accuracy_ci": ci, "chance": 1.0 / len(classes)}


def summarise(labels: np.ndarray, scores: np.ndarray, names: list[str], seen: set[str] | None) -> dict:
    per_label = {n: roc_auc(labels[np.isin(labels[:, j], (0, 1)), j], scores[np.isin(labels[:, j], (0, 1)), j])
                 for j, n in enumerate(names) if not np.isnan(scores[:, j]).any()}
    out = {"auc": per_label, "macro_auc": float(np.mean(list(per_label.values()))) if per_label else float("nan")}
    if seen is not None:
        for group, members in (("seen", [n for n in per_label if n in seen]),
                               ("unseen", [n for n in per_label if n not in seen])):
            out[f"{group}_classes"] = members
            out[f"{group}_macro_auc"] = float(np.mean([per_label[n] for n in members])) if members else float("nan")
    return out


def seen_classes(ctx: EvalContext) -> set[str] | None:
    """The classes seen in pre-training: as given, else those a radlab checkpoint's training data annotated,
    else the label head's classes; None when unknown (no seen/unseen split is reported)."""
    given = ctx.option_list("seen_classes", None)
    if given:
        return set(given)
    if ctx.encoder.seen_classes is not None:
        return set(ctx.encoder.seen_classes)
    head = ctx.encoder.label_head
    return set(head.class_names) if head is not None else None


@TASKS.register("zero_shot", "prompts (names/ensemble/descriptions) or class prototypes; AUC, top-1, seen vs unseen, "
                             "5x200-style exclusive accuracy")
def zero_shot(ctx: EvalContext) -> dict:
    if not ctx.encoder.has_text and ctx.encoder.label_head is None:
        raise TaskSkipped("zero-shot needs a text tower or a label head; this encoder has neither")
    ctx.require_images(("test",))
    labels_all = ctx.labels("test")
    names = [n for j, n in enumerate(ctx.label_names) if two_class(labels_all[:, j])]
    if not names:
        raise TaskSkipped("no finding has both classes among the test images")
    labels = labels_all[:, [ctx.label_names.index(n) for n in names]]
    seen = seen_classes(ctx)
    results: dict = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # mode -> (binary scores, class scores)
    if ctx.encoder.has_text:
        for mode in ctx.option_list("modes", PROMPT_MODES):
            binary, per_class = scores[mode] = prompt_scores(ctx, names, mode)
            results[mode] = {**summarise(labels, binary, names, seen),
                             "single_label": single_label(labels, per_class, similarity_kind(ctx))}
        primary = ctx.option("primary", "names" if "names" in results else next(iter(results)))
        mode = "prompts"
    if ctx.encoder.label_head is not None:
        logits, definitions = prototype_scores(ctx, names)
        direct = np.where([n in definitions for n in names], np.nan, logits)
        scores["prototypes"] = (logits, direct)
        results["prototypes"] = {**summarise(labels, logits, names, seen), "unseen_defined_as": definitions,
                                 "single_label": single_label(labels, direct)}
        if not ctx.encoder.has_text:
            primary, mode = "prototypes", "prototypes"
    if not results[primary]["auc"]:
        raise TaskSkipped("no evaluable finding can be scored zero-shot by this encoder")
    scored = [names.index(n) for n in results[primary]["auc"]]
    binary, per_class = scores[primary]
    y, s = labels[:, scored], binary[:, scored]
    kind = similarity_kind(ctx) if mode == "prompts" else None
    return {"mode": mode, "prompt_mode": primary, "similarity": kind,
            "macro_auc": results[primary]["macro_auc"],
            **macro_statistics(ctx, y, s, [names[j] for j in scored], ctx.rows("test")),
            **per_finding(y, s, [names[j] for j in scored]), "modes": results,
            "exclusive": exclusive_accuracy(ctx, names, labels, per_class, kind or "global"),
            "seen_classes": sorted(seen) if seen is not None else None}
