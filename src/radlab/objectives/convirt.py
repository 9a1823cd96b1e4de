"""ConVIRT: asymmetrically weighted image-text InfoNCE with non-linear projections and a fixed temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import clip_loss


@OBJECTIVES.register("convirt", "ConVIRT: lambda-weighted image->text / text->image InfoNCE, MLP heads, fixed tau")
class ConVIRTObjective(Objective):
    """ConVIRT (Zhang et al., 2020, "Contrastive Learning of Medical Visual Representations from Paired Images
    and Text").

    Image and text features h go through two-layer projections g(h) = W2 ReLU(W1 h): W1 is the encoder's
    own ``image_proj`` / ``text_proj`` and W2 (with bias) belongs to this objective. With normalised
    projections v_i (image), u_i (text), fixed temperature τ (0.1) and weight λ (0.75), over the N pairs of
    the global batch that have report text:

        l_i(v->u) = -log exp(v_i·u_i / τ) / sum_k exp(v_i·u_k / τ)
        l_i(u->v) = -log exp(u_i·v_i / τ) / sum_k exp(u_i·v_k / τ)
        L = 1/N sum_i [ λ l_i(v->u) + (1 - λ) l_i(u->v) ]

    As in the paper, the representation meant for downstream use is the image tower's; ``encode_image`` /
    ``encode_text`` return the W1 outputs, before the non-linearity the loss is computed after.
    """

    requires_text = True

    def __init__(self, embed_dim: int, temperature: float = 0.1, weight: float = 0.75) -> None:
        super().__init__()
        self.image_head = nn.Sequential(nn.ReLU(), nn.Linear(embed_dim, embed_dim))
        self.text_head = nn.Sequential(nn.ReLU(), nn.Linear(embed_dim, embed_dim))
        self.temperature = temperature
        self.weight = weight

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        image = F.normalize(self.image_head(model.encode_image(batch["image"][keep], normalize=False)), dim=-1)
        tokens = {k: v[keep] for k, v in batch["tokens"].items()}
        text = F.normalize(self.text_head(model.encode_text(tokens, normalize=False)), dim=-1)
        loss = clip_loss(image, text, torch.tensor(1.0 / self.temperature, device=image.device), self.weight)
        return {"loss": loss, "convirt": loss.detach()}
