"""Zero-shot classification: positive vs negative prompts in the joint space, or class prototypes."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from radlab.data.taxonomy import display_name
from radlab.evaluation.context import TASKS, EvalContext, evaluable_labels


def binary_prompts(name: str) -> tuple[str, str]:
    words = display_name(name)
    return f"FINDINGS: {words}.", f"FINDINGS: no {words}."


@torch.no_grad()
def prompt_scores(ctx: EvalContext, names: list[str]) -> np.ndarray:
    """Score per (test image, finding): softmax over {positive, negative} prompt similarities."""
    images = torch.from_numpy(ctx.image_features("test", kind="embedding"))
    prompts = [p for name in names for p in binary_prompts(name)]
    text = ctx.encoder.encode_text(prompts).cpu().reshape(len(names), 2, -1)
    logits = torch.einsum("nd,kpd->nkp", images, text) * 100.0
    return logits.softmax(-1)[..., 0].numpy()


@torch.no_grad()
def prototype_scores(ctx: EvalContext, names: list[str]) -> np.ndarray:
    head = ctx.encoder.label_head
    missing = [n for n in names if n not in head.class_names]
    if missing:
        raise ValueError(f"the encoder's label head has no prototype for {missing}")
    images = torch.from_numpy(ctx.image_features("test", kind="embedding"))
    logits = head(images.to(head.prototypes.device)).cpu().numpy()
    return logits[:, [head.class_names.index(n) for n in names]]


@TASKS.register("zero_shot", "no training: text prompts (or class prototypes); test AUC per finding")
def zero_shot(ctx: EvalContext) -> dict:
    if ctx.encoder.has_text:
        mode = "prompts"
    elif ctx.encoder.label_head is not None:
        mode = "prototypes"
    else:
        raise ValueError("zero-shot needs a text tower or a label head; this encoder has neither")
    names = evaluable_labels(ctx.table, ctx.label_names)
    if mode == "prototypes":
        names = [n for n in names if n in ctx.encoder.label_head.class_names]
    scores = prompt_scores(ctx, names) if mode == "prompts" else prototype_scores(ctx, names)
    labels = ctx.labels("test")
    per_label = {}
    for j, name in enumerate(names):
        k = ctx.label_names.index(name)
        known = np.isin(labels[:, k], (0, 1))
        per_label[name] = float(roc_auc_score(labels[known, k], scores[known, j]))
    return {"mode": mode, "auc": per_label, "macro_auc": float(np.mean(list(per_label.values())))}
