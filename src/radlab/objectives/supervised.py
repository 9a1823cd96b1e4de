"""Supervised multi-label objective over harmonised labels ("Unimodal" in the reality-check paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radlab.models.encoder import LabelHead
from radlab.objectives.base import OBJECTIVES, Objective

UNCERTAIN_POLICIES = ("ignore", "positive", "negative")


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the (sample, class) pairs the sources annotate."""
    weights = mask.to(logits.dtype)
    targets = torch.nan_to_num(labels, nan=0.0).clamp(0, 1)
    per_item = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per_item * weights).sum() / weights.sum().clamp_min(1.0)


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

        logit_ik = s · cos(z_i, p_k);   L = sum_{ik} m_ik BCE(logit_ik, y_ik) / sum_{ik} m_ik

    where m_ik = 1 only when the source of sample i annotates class k, so datasets with different label
    sets merge without reading "not annotated" as negative.
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
