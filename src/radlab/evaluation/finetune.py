"""Full fine-tuning: a copy of the image tower plus a linear head, trained end to end on the train split with
class-balanced masked BCE for a fixed number of steps (the same budget for every encoder); test AUC."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from radlab.data.dataset import Collator, RecordDataset
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.evaluation.linear_probe import auc_report, two_class


class Classifier(nn.Module):
    def __init__(self, tower: nn.Module, dim: int, classes: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(images).pooled)


def batches(loader: DataLoader, steps: int):
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return


@TASKS.register("finetune", "end-to-end fine-tune of the image tower + linear head (fixed steps); test AUC")
def finetune(ctx: EvalContext) -> dict:
    ctx.require_images(("train", "test"))
    y_train = ctx.labels("train")
    y_test = ctx.labels("test")
    cols = [j for j in range(len(ctx.label_names)) if two_class(y_train[:, j]) and two_class(y_test[:, j])]
    if not cols:
        raise TaskSkipped("no finding has both classes in the train and test splits")
    names = [ctx.label_names[j] for j in cols]
    steps, lr = int(ctx.option("steps", 300)), float(ctx.option("lr", 1e-4))
    torch.manual_seed(ctx.seed)
    device = next(ctx.encoder.parameters()).device
    tower = copy.deepcopy(ctx.encoder.image_tower).to(device).train()
    model = Classifier(tower, tower.embed_dim, len(cols)).to(device)
    known = np.isin(y_train[:, cols], (0, 1))
    pos = ((y_train[:, cols] == 1) & known).sum(0)
    pos_weight = torch.tensor((known.sum(0) - pos) / np.maximum(pos, 1), dtype=torch.float32, device=device)
    optim = torch.optim.AdamW([{"params": tower.parameters(), "lr": lr},
                               {"params": model.head.parameters(), "lr": lr * 10}], weight_decay=0.05)
    train = ctx.table.subset(ctx.rows("train"))
    loader = DataLoader(RecordDataset(train, ctx.encoder.preprocess, names), batch_size=int(ctx.option("batch_size", 32)),
                        shuffle=True, collate_fn=Collator(), generator=torch.Generator().manual_seed(ctx.seed))
    losses = []
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
        losses.append(float(loss.detach()))
    model.eval()
    test = ctx.table.subset(ctx.rows("test"))
    scores = np.full((len(test), len(ctx.label_names)), np.nan)
    with torch.no_grad():
        out = [model(b["image"].to(device)).cpu().numpy()
               for b in DataLoader(RecordDataset(test, ctx.encoder.preprocess), batch_size=ctx.batch_size,
                                   collate_fn=Collator())]
    scores[:, cols] = np.concatenate(out)
    head = max(1, len(losses) // 10)
    return {**auc_report(ctx, y_test, scores, names), "steps": steps, "lr": lr,
            "train_loss_first": float(np.mean(losses[:head])), "train_loss_last": float(np.mean(losses[-head:]))}
