"""DLILP: disentangled language-image-label pre-training (CLIP on a text head + Unimodal on a label head)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.models.encoder import LabelHead
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import LogitScale, clip_loss, reports_or_prompts
from radlab.objectives.supervised import masked_bce, resolve_uncertain


@OBJECTIVES.register("dlilp", "DLILP: lambda * CLIP on a text head + masked BCE on a separate label head")
class DLILPObjective(Objective):
    """DLILP (Silva-Rodríguez, Dolz and Ben Ayed, "A Reality Check of Vision-Language Pre-training in
    Radiology: Have We Progressed Using Text?", IPMI 2025, arXiv:2504.05227).

    Two projections of the image tower's pooled feature h_i: the text head (the encoder's ``image_proj``,
    giving u_i, aligned with the report embeddings v_i) and a label head (this objective's ``label_proj``,
    giving z_i) scored against learnable class prototypes p_k. Each has its own temperature: s_t (CLIP,
    learnable, 1/0.07, kept within [1, 100]) and s_l (``LabelHead``'s, learnable). With m_ik = 1 only where sample
    i's source annotates class k:

        L = λ · CLIP(u, v; s_t) + 1/|I| sum_{i in I} sum_k m_ik BCE(s_l cos(z_i, p_k), y_ik) / sum_k m_ik

    with I the samples with any annotated class (``masked_bce``) and λ = 0.1 (the reference code's
    ``lambda_dlilp``).

    CLIP (see ``clip_loss``) runs over the global batch's samples that have report text. With
    ``prompts=True``, samples without a report (label-only datasets) join the CLIP term with a templated
    prompt composed from their labels; with ``prompts=False`` (default) they train the label head only.
    The label head stays a training head: evaluation uses the text-aligned space (``encode_image``).
    """

    requires_text = True
    requires_labels = True

    @classmethod
    def trains_without_reports(cls, option: Callable[[str], object]) -> str | None:
        return "its label head"

    def __init__(self, class_names: list[str], embed_dim: int, image_dim: int, weight: float = 0.1,
                 init_temperature: float = 0.07, label_temperature: float = 0.07, max_scale: float = 100.0,
                 prompts: bool = False, uncertain: str = "ignore") -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.label_proj = nn.Linear(image_dim, embed_dim, bias=False)
        self.head = LabelHead(class_names, embed_dim, label_temperature)
        self.logit_scale = LogitScale(init_temperature, max_scale)
        self.weight = weight
        self.prompts = prompts
        self.uncertain = uncertain

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = model.image_output(batch["image"])
        labels, mask = resolve_uncertain(batch["labels"], batch["label_mask"], self.uncertain)
        bce = masked_bce(self.head(self.label_proj(out.pooled)), labels, mask)
        image = F.normalize(model.project_image(out), dim=-1)
        if self.prompts:
            text = model.encode_text(reports_or_prompts(batch, self.class_names))
        else:
            keep = batch["has_text"]
            image = image[keep]
            text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        scale = self.logit_scale()
        clip = clip_loss(image, text, scale)
        loss = self.weight * clip + bce
        return {"loss": loss, "clip": clip.detach(), "bce": bce.detach(), "logit_scale": scale.detach()}
