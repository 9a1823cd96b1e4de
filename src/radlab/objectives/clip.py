"""CLIP / InfoNCE image-text contrastive objective."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched, L2-normalised pairs (row i of each is a pair)."""
    logits = logit_scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@OBJECTIVES.register("clip", "CLIP: symmetric image-text InfoNCE with a learnable temperature")
class ClipObjective(Objective):
    """CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision").

    With normalised image and text embeddings u_i, v_i and learnable scale s = exp(t) (initialised to
    1/0.07, clamped at 100):

        L = 1/2N sum_i [ -log exp(s u_i·v_i) / sum_j exp(s u_i·v_j)  -log exp(s u_i·v_i) / sum_j exp(s u_j·v_i) ]

    Only samples with real report text enter the loss.
    """

    requires_text = True

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_scale = max_scale

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_scale)

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        image = model.encode_image(batch["image"][keep])
        text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        loss = clip_loss(image, text, self.scale())
        return {"loss": loss, "clip": loss.detach(), "logit_scale": self.scale().detach()}
