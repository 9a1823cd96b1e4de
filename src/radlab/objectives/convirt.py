"""ConVIRT: asymmetrically weighted image-text InfoNCE with non-linear projections and a fixed temperature."""

from __future__ import annotations

import torch
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import clip_loss


@OBJECTIVES.register("convirt", "ConVIRT: lambda-weighted image->text / text->image InfoNCE, MLP heads, fixed tau")
class ConVIRTObjective(Objective):
    """ConVIRT (Zhang et al., 2020, "Contrastive Learning of Medical Visual Representations from Paired Images
    and Text").

    Image and text features h go through two-layer projections g(h) = W2 ReLU(W1 h): the encoder's own
    ``image_proj`` / ``text_proj`` built with ``model.projection: mlp``, so zero-shot and retrieval use the
    space the loss trained. With normalised projections v_i (image), u_i (text), fixed temperature τ (0.1)
    and weight λ (0.75), over the N pairs of the global batch that have report text:

        l_i(v->u) = -log exp(v_i·u_i / τ) / sum_k exp(v_i·u_k / τ)
        l_i(u->v) = -log exp(u_i·v_i / τ) / sum_k exp(u_i·v_k / τ)
        L = 1/N sum_i [ λ l_i(v->u) + (1 - λ) l_i(u->v) ]

    As in the paper, the representation meant for downstream probes is the image tower's.
    """

    requires_text = True

    def __init__(self, model: nn.Module, temperature: float = 0.1, weight: float = 0.75) -> None:
        super().__init__()
        if model.projection_kind != "mlp":
            raise ValueError("ConVIRT's loss is defined on non-linear projections: set model.projection=mlp "
                             f"(got {model.projection_kind!r})")
        self.temperature = temperature
        self.weight = weight

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        image = model.encode_image(batch["image"][keep])
        text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        loss = clip_loss(image, text, torch.tensor(1.0 / self.temperature, device=image.device), self.weight)
        return {"loss": loss, "convirt": loss.detach()}
