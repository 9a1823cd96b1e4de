"""Closed-set VQA with frozen towers: pooled image features + the question's frozen text embedding (or a
bag of words when the encoder has no text tower) -> a small MLP over the training answers.

Reads records with ``question`` / ``answer`` / ``answer_type`` columns (the ``vqa_rad`` and ``slake``
sources). Accuracy overall and per answer type, with patient (image) bootstrap intervals; test answers
outside the training answer set count as wrong. Two baselines show how much the image adds: the majority
training answer, and the same head trained on the question alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped, nonzero, single_thread
from radlab.evaluation.metrics import accuracy, tokenize_text


def image_features(ctx: EvalContext, rows: np.ndarray) -> np.ndarray:
    """Pooled features per question row, extracted once per distinct image."""
    paths = ctx.table.frame["image_path"].to_numpy()[rows]
    unique, first, inverse = np.unique(paths, return_index=True, return_inverse=True)
    feats = ctx.features.get(ctx.encoder, ctx.table, rows[first], "pooled", ctx.batch_size)
    return feats[inverse]


def bag_of_words(train: list[str], questions: list[str]) -> np.ndarray:
    vocab = {w: i for i, w in enumerate(sorted({w for q in train for w in tokenize_text(q)}))}
    out = np.zeros((len(questions), len(vocab)), np.float32)
    for n, q in enumerate(questions):
        for w in tokenize_text(q):
            if w in vocab:
                out[n, vocab[w]] = 1.0
    return out


def fusion_head(dim: int, answers: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, answers))


@single_thread()
def train_head(x: np.ndarray, y: np.ndarray, answers: int, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = fusion_head(x.shape[1], answers)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (min(128, len(xt)),), generator=gen)
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.eval()


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x.astype(np.float32))).argmax(1).numpy()


@TASKS.register("vqa", "closed-set VQA (VQA-RAD, SLAKE): frozen towers + small fusion MLP; accuracy with CI")
def vqa(ctx: EvalContext) -> dict:
    frame = ctx.table.frame
    if not {"question", "answer"} <= set(frame.columns):
        raise TaskSkipped("the records have no question/answer columns (use the vqa_rad or slake source)")
    ctx.require_images(("train", "test"))
    rows = {s: ctx.rows(s) for s in ("train", "test")}
    questions = {s: frame["question"].to_numpy()[r].astype(str).tolist() for s, r in rows.items()}
    answers = {s: frame["answer"].to_numpy()[r].astype(str) for s, r in rows.items()}
    types = frame["answer_type"].to_numpy()[rows["test"]].astype(str) if "answer_type" in frame else None
    vocab = {a: i for i, a in enumerate(sorted(set(answers["train"])))}
    y = {s: np.array([vocab.get(a, -1) for a in v]) for s, v in answers.items()}
    img = {s: image_features(ctx, r) for s, r in rows.items()}
    mean, std = img["train"].mean(0), nonzero(img["train"].std(0))
    img = {s: ((v - mean) / std).astype(np.float32) for s, v in img.items()}
    if ctx.encoder.has_text:
        q = {s: ctx.text_features(v) for s, v in questions.items()}
        question_encoding = "text_tower"
    else:
        q = {s: bag_of_words(questions["train"], v) for s, v in questions.items()}
        question_encoding = "bag_of_words"
    q_mean, q_std = q["train"].mean(0), nonzero(q["train"].std(0))
    q = {s: ((v - q_mean) / q_std).astype(np.float32) for s, v in q.items()}
    steps = int(ctx.option("steps", 500))
    fused = train_head(np.concatenate([img["train"], q["train"]], 1), y["train"], len(vocab), steps, ctx.seed)
    predicted = predict(fused, np.concatenate([img["test"], q["test"]], 1))
    blind = train_head(np.concatenate([np.zeros_like(img["train"]), q["train"]], 1), y["train"], len(vocab), steps,
                       ctx.seed)
    blind_predicted = predict(blind, np.concatenate([np.zeros_like(img["test"]), q["test"]], 1))
    correct = predicted == y["test"]
    patients = ctx.patients(rows["test"])
    majority = np.bincount(y["train"], minlength=len(vocab)).argmax()
    out: dict = {
        "accuracy": float(correct.mean()),
        "accuracy_ci": ctx.interval("accuracy", lambda i: float(correct[i].mean()), patients),
        "question_only_accuracy": accuracy(y["test"], blind_predicted),
        "majority_accuracy": accuracy(y["test"], np.full(len(y["test"]), majority)),
        "n_answers": len(vocab), "n_train": int(len(rows["train"])), "n_test": int(len(rows["test"])),
        "test_answers_unseen": float((y["test"] < 0).mean()), "question_encoding": question_encoding,
        "steps": steps, "by_answer_type": {}}
    if types is not None:
        for kind in sorted(set(types)):
            sel = np.flatnonzero(types == kind)
            out["by_answer_type"][kind] = {
                "accuracy": float(correct[sel].mean()), "n": int(len(sel)),
                "accuracy_ci": ctx.interval(f"accuracy_{kind}", lambda i, s=sel: float(correct[s][i].mean()),
                                            patients[sel])}
    return out
