"""Supervised multi-label objective over harmonised labels ("Unimodal" in the reality-check paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radlab.models.encoder import LabelHead
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.train.distributed import global_count, global_mean

UNCERTAIN_POLICIES = ("ignore", "positive", "negative")


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over each sample's annotated classes, then over the global batch's samples
    that have any (as DLILP's reference code does), so a source that annotates many classes weighs no more per
    image than one that annotates few. Under DDP, W ranks train as one process with the whole batch."""
    weights = mask.to(logits.dtype)
    targets = torch.nan_to_num(labels, nan=0.0).clamp(0, 1)
    per_item = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    annotated = weights.sum(1)
    labelled = annotated > 0
    per_sample = (per_item * weights).sum(1)[labelled] / annotated[labelled]
    return global_mean(per_sample, global_count(int(labelled.sum()), logits.device))


def resolve_uncertain(labels: torch.Tensor, mask: torch.Tensor, policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an uncertainty policy to -1 labels: drop them from the loss, or read them as 1 or 0."""
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain policy must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    uncertain = labels == -1
    if policy == "ignore":
        return labels, mask & ~uncertain
    return torch.where(uncertain, torch.full_like(labels, float(policy == "positive")), labels), mask


@OBJECTIVES.register("supervised", "multi-label BCE on class prototypes, masked to annotated labels")
class SupervisedObjective(Objective):
    """Supervised pre-training on fine-grained labels: "Unimodal" in Silva-Rodríguez, Dolz and Ben Ayed,
    "A Reality Check of Vision-Language Pre-training in Radiology: Have We Progressed Using Text?" (IPMI 2025,
    arXiv:2504.05227).

    With projected image embedding z_i, learnable prototypes p_k and temperature s = exp(t):

        logit_ik = s · cos(z_i, p_k);   L = 1/|I| sum_{i in I} sum_k m_ik BCE(logit_ik, y_ik) / sum_k m_ik

    where m_ik = 1 only when the source of sample i annotates class k and I are the samples with any
    annotated class, so datasets with different label sets merge without reading "not annotated" as
    negative, and each image weighs the same whatever its source annotates (the reference code's mean).
    """

    requires_labels = True

    def __init__(self, class_names: list[str], embed_dim: int, init_temperature: float = 0.07,
                 uncertain: str = "ignore") -> None:
        super().__init__()
        self.head = LabelHead(class_names, embed_dim, init_temperature)
        self.uncertain = uncertain

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.head(model.encode_image(batch["image"], normalize=False))
        labels, mask = resolve_uncertain(batch["labels"], batch["label_mask"], self.uncertain)
        loss = masked_bce(logits, labels, mask)
        return {"loss": loss, "bce": loss.detach()}

    def attach(self, model: nn.Module) -> None:
        model.label_head = self.head
