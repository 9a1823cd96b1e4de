"""ConVIRT: asymmetrically weighted image-text InfoNCE with non-linear projections and a fixed temperature."""

from __future__ import annotations

import torch
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import clip_loss
from radlab.objectives.report_text import check_text_view, text_view_tokens


@OBJECTIVES.register("convirt", "ConVIRT: lambda-weighted image->text / text->image InfoNCE, MLP heads, fixed tau")
class ConVIRTObjective(Objective):
    """ConVIRT (Zhang et al., 2020, "Contrastive Learning of Medical Visual Representations from Paired Images
    and Text").

    Image and text features h go through two-layer projections g(h) = W2 ReLU(W1 h): the encoder's own
    ``image_proj`` / ``text_proj`` built with ``model.projection: mlp_wide`` (hidden layer as wide as the
    tower's features, as the released heads; ``mlp``: as wide as the output), so zero-shot and retrieval use the
    space the loss trained. With normalised projections v_i (image), u_i (text), fixed temperature τ (0.1)
    and weight λ (0.75), over the N pairs of the global batch that have report text:

        l_i(v->u) = -log exp(v_i·u_i / τ) / sum_k exp(v_i·u_k / τ)
        l_i(u->v) = -log exp(u_i·v_i / τ) / sum_k exp(u_i·v_k / τ)
        L = 1/N sum_i [ λ l_i(v->u) + (1 - λ) l_i(u->v) ]

    The text is the paper's transformation t_u (Sec. 2.2): one sentence of the report sampled uniformly at
    every step (``text_view: sentence``, ``report_text.sample_sentences``: headers stripped, pieces without
    a letter never drawn); ``text_view: report`` contrasts the whole report instead. Evaluation encodes whole
    reports either way. As in the paper, the representation meant for downstream probes is the image tower's.
    """

    requires_text = True

    def __init__(self, model: nn.Module, temperature: float = 0.1, weight: float = 0.75,
                 text_view: str = "sentence") -> None:
        super().__init__()
        if model.projection_kind not in ("mlp", "mlp_wide"):
            raise ValueError("ConVIRT's loss is defined on non-linear projections: set model.projection=mlp_wide "
                             f"or mlp (got {model.projection_kind!r})")
        self.temperature = temperature
        self.weight = weight
        self.text_view = check_text_view(text_view)

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        image = model.encode_image(batch["image"][batch["has_text"]])
        text = model.encode_text(text_view_tokens(model, batch, self.text_view))
        loss = clip_loss(image, text, torch.tensor(1.0 / self.temperature, device=image.device), self.weight)
        return {"loss": loss, "convirt": loss.detach()}
