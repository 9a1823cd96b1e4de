"""MedCLIP: semantic matching loss with soft targets from label similarity (pairs need not be matched)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import LogitScale, positives, soft_cross_entropy
from radlab.train.distributed import gather_with_grad, global_mean


def semantic_targets(labels_image: torch.Tensor, labels_text: torch.Tensor, ids_image: torch.Tensor,
                     ids_text: torch.Tensor) -> torch.Tensor:
    """S_ij = cos(y_i, y_j) between image and text label vectors; 1 where image and text come from the same
    study (``ids``: study numbers), so an image's own report, also when a sibling image of its study brought it,
    stays a full match even when neither carries a positive finding. At least float32, autocast off: in bf16
    equal label vectors scored about 1.008, above an own report's 1, and 1 / τ_t magnifies such errors."""
    dtype = torch.promote_types(labels_image.dtype, torch.float32)
    with torch.autocast(labels_image.device.type, enabled=False):
        similarity = F.normalize(labels_image.to(dtype), dim=-1) @ F.normalize(labels_text.to(dtype), dim=-1).T
    return torch.where(ids_image[:, None] == ids_text[None, :], torch.ones_like(similarity), similarity)


def medclip_loss(image: torch.Tensor, text: torch.Tensor, labels_image: torch.Tensor, labels_text: torch.Tensor,
                 ids_image: torch.Tensor, ids_text: torch.Tensor, logit_scale: torch.Tensor,
                 target_temperature: float) -> torch.Tensor:
    """Cross-entropy of softmax(s u·v) to softmax(S / τ_t), image->text over texts and text->image over
    images, each averaged over its rows of the global batch. Images and texts may differ in number."""
    all_image, offset_image = gather_with_grad(image)
    all_text, offset_text = gather_with_grad(text)
    if len(all_image) == 0 or len(all_text) == 0:
        return (image.sum() + text.sum() + logit_scale) * 0.0  # every parameter in the graph (DDP)
    similarity = semantic_targets(gather_with_grad(labels_image)[0], gather_with_grad(labels_text)[0],
                                  gather_with_grad(ids_image)[0], gather_with_grad(ids_text)[0])
    rows_image = slice(offset_image, offset_image + len(image))
    rows_text = slice(offset_text, offset_text + len(text))
    to_text = F.softmax(similarity[rows_image] / target_temperature, dim=1)
    to_image = F.softmax(similarity[:, rows_text].T / target_temperature, dim=1)
    image_loss = global_mean(soft_cross_entropy(logit_scale * image @ all_text.T, to_text), len(all_image))
    text_loss = global_mean(soft_cross_entropy(logit_scale * text @ all_image.T, to_image), len(all_text))
    return 0.5 * (image_loss + text_loss)


@OBJECTIVES.register("medclip", "MedCLIP: soft targets from label similarity; unpaired images and texts")
class MedCLIPObjective(Objective):
    """MedCLIP (Wang et al., 2022, "MedCLIP: Contrastive Learning from Unpaired Medical Images and Text").

    Images i and texts j carry label vectors y (binary positives; the text's are its record's labels). With
    S_ij = cos(y_i^img, y_j^txt) (1 for an image and its study's report), target temperature τ_t and learnable
    scale s (1/0.07, clamped at 100) on normalised embeddings u_i, v_j:

        L = 1/2 [ -1/N_img sum_i sum_j softmax_j(S_ij/τ_t) log softmax_j(s u_i·v_j)
                  -1/N_txt sum_j sum_i softmax_i(S_ij/τ_t) log softmax_i(s u_i·v_j) ]

    Matching is semantic, not by pairing, so every image trains (against all reports in the global batch)
    even without a report of its own, and reports need not have images. MedCLIP applies the softmax to S
    directly (τ_t = 1); the default τ_t = 0.1 sharpens the targets toward same-finding texts.
    """

    requires_text = True
    requires_labels = True

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0,
                 target_temperature: float = 0.1) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_temperature, max_scale)
        self.target_temperature = target_temperature

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["has_text"]
        labels = positives(batch["labels"])
        image = model.encode_image(batch["image"])
        text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        scale = self.logit_scale()
        loss = medclip_loss(image, text, labels, labels[keep], batch["study"], batch["study"][keep], scale,
                            self.target_temperature)
        return {"loss": loss, "medclip": loss.detach(), "logit_scale": scale.detach()}
