"""Full fine-tuning: a copy of the image tower plus a linear head, trained end to end on the train split with
class-balanced masked BCE under a cosine learning rate (linear warm-up) for at most ``steps`` steps (the same
budget for every encoder). Every ``eval_every`` steps the validation macro AUC is measured; the best state is
kept, training stops after ``patience`` evaluations without improvement, and the test AUC is that of the best
state. Without a validation split that has both classes of a finding, the last step is scored (and said so)."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from radlab.data.dataset import Collator, RecordDataset
from radlab.data.records import RecordTable
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import auc_report, two_class
from radlab.evaluation.metrics import macro_auc
from radlab.models.towers import Preprocess
from radlab.train.optim import cosine_with_warmup
from radlab.train.state import cpu_copy

WARMUP = 0.05  # fraction of ``steps`` with a linear learning-rate warm-up
log = logging.getLogger(__name__)


class Classifier(nn.Module):
    def __init__(self, tower: nn.Module, dim: int, classes: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(images).pooled)


def batches(loader: DataLoader, steps: int) -> Iterator[dict]:
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return


def predict(model: Classifier, table: RecordTable, preprocess: Preprocess, batch_size: int,
            device: torch.device) -> np.ndarray:
    """Logits [N, classes] of the model in eval mode (its train/eval mode is restored afterwards)."""
    training = model.training
    model.eval()
    with torch.no_grad():
        out = [model(b["image"].to(device)).cpu().numpy()
               for b in DataLoader(RecordDataset(table, preprocess), batch_size=batch_size, collate_fn=Collator())]
    model.train(training)
    return np.concatenate(out)


@TASKS.register("finetune", "end-to-end fine-tune of the image tower + linear head, best step on val; test AUC")
def finetune(ctx: EvalContext) -> dict:
    ctx.require_images(("train", "test"))
    y_train, y_val, y_test = ctx.labels("train"), ctx.labels("val"), ctx.labels("test")
    cols = [j for j in range(len(ctx.label_names)) if two_class(y_train[:, j]) and two_class(y_test[:, j])]
    if not cols:
        raise TaskSkipped("no finding has both classes in the train and test splits")
    names = [ctx.label_names[j] for j in cols]
    steps, lr = int(ctx.option("steps", 300)), float(ctx.option("lr", 1e-4))
    eval_every, patience = int(ctx.option("eval_every", 50)), int(ctx.option("patience", 3))
    if steps < 1 or eval_every < 1 or patience < 1:
        raise ValueError(f"finetune needs steps, eval_every and patience >= 1, got {steps}, {eval_every}, {patience}")
    select = any(two_class(y_val[:, j]) for j in cols)
    if not select:
        log.warning("finetune: no finding has both classes among the %d validation images; no model selection, "
                    "the last step is scored", len(y_val))
    torch.manual_seed(ctx.seed)
    device = next(ctx.encoder.parameters()).device
    tower = copy.deepcopy(ctx.encoder.image_tower).to(device).train()
    model = Classifier(tower, tower.embed_dim, len(cols)).to(device)
    known = np.isin(y_train[:, cols], (0, 1))
    pos = ((y_train[:, cols] == 1) & known).sum(0)
    pos_weight = torch.tensor((known.sum(0) - pos) / np.maximum(pos, 1), dtype=torch.float32, device=device)
    optim = torch.optim.AdamW([{"params": tower.parameters(), "lr": lr},
                               {"params": model.head.parameters(), "lr": lr * 10}], weight_decay=0.05)
    schedule = cosine_with_warmup(optim, max(1, round(WARMUP * steps)), steps)
    train = ctx.table.subset(ctx.rows("train"))
    val = ctx.table.subset(ctx.rows("val"))
    preprocess = ctx.encoder.preprocess
    loader = DataLoader(RecordDataset(train, preprocess, names), batch_size=int(ctx.option("batch_size", 32)),
                        shuffle=True, collate_fn=Collator(), generator=torch.Generator().manual_seed(ctx.seed))
    losses: list[float] = []
    best_auc, best_step, best_state, stale = -math.inf, steps, None, 0
    for batch in batches(loader, steps):
        labels = batch["labels"].to(device)
        mask = batch["label_mask"].to(device) & (labels >= 0)  # annotated (not NaN) and certain
        logits = model(batch["image"].to(device))
        loss = F.binary_cross_entropy_with_logits(logits, torch.where(mask, labels, 0.0), pos_weight=pos_weight,
                                                  reduction="none")
        loss = torch.where(mask, loss, 0.0).sum() / mask.sum().clamp_min(1)
        optim.zero_grad()
        loss.backward()
        optim.step()
        schedule.step()
        losses.append(float(loss.detach()))
        done = len(losses)
        if not select or (done % eval_every and done < steps):
            continue
        val_auc = macro_auc(y_val[:, cols], predict(model, val, preprocess, ctx.batch_size, device))
        if val_auc > best_auc:
            best_auc, best_step, best_state, stale = val_auc, done, cpu_copy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    test = ctx.table.subset(ctx.rows("test"))
    scores = np.full((len(test), len(ctx.label_names)), np.nan)
    scores[:, cols] = predict(model, test, preprocess, ctx.batch_size, device)
    head = max(1, len(losses) // 10)
    selection = ("best validation macro AUC" if select
                 else "last step (no validation split with both classes of a finding)")
    return {**auc_report(ctx, y_test, scores, names), "steps": steps, "lr": lr, "eval_every": eval_every,
            "patience": patience, "selection": selection, "best_step": best_step,
            "val_auc_best": best_auc if select else None, "steps_run": len(losses),
            "train_loss_first": float(np.mean(losses[:head])), "train_loss_last": float(np.mean(losses[-head:]))}
