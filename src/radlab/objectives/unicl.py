"""UniCL: image-text contrastive learning with label-derived targets (image-label-text in one space)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import LogitScale, positives, reports_or_prompts, soft_cross_entropy
from radlab.train.distributed import gather_with_grad, global_mean


def unicl_targets(labels_image: torch.Tensor, labels_text: torch.Tensor) -> torch.Tensor:
    """T = clip(Y_img Y_txt^T + I, 0, 1): a pair is positive when it is the pair itself or shares a positive
    finding (Y binary, [N, K]). At least float32, autocast off, as the targets normalised from it."""
    dtype = torch.promote_types(labels_image.dtype, torch.float32)
    eye = torch.eye(len(labels_image), len(labels_text), device=labels_image.device, dtype=dtype)
    with torch.autocast(labels_image.device.type, enabled=False):
        return (labels_image.to(dtype) @ labels_text.to(dtype).T + eye).clamp(0, 1)


def unicl_loss(image: torch.Tensor, text: torch.Tensor, labels_image: torch.Tensor, labels_text: torch.Tensor,
               logit_scale: torch.Tensor) -> torch.Tensor:
    """Bidirectional cross-entropy to T row-normalised (image->text) and column-normalised (text->image),
    over the global batch (rows i of ``image`` and ``text`` are pairs; see ``clip_loss`` for the sharing)."""
    all_image, offset = gather_with_grad(image)
    all_text, _ = gather_with_grad(text)
    targets = unicl_targets(gather_with_grad(labels_image)[0], gather_with_grad(labels_text)[0])
    rows = slice(offset, offset + len(image))
    to_text = targets[rows] / targets[rows].sum(1, keepdim=True)
    to_image = targets[:, rows].T / targets[:, rows].T.sum(1, keepdim=True)
    per_row = 0.5 * (soft_cross_entropy(logit_scale * image @ all_text.T, to_text)
                     + soft_cross_entropy(logit_scale * text @ all_image.T, to_image))
    return global_mean(per_row, len(all_image))


@OBJECTIVES.register("unicl", "UniCL: contrastive with targets clip(Y Y^T + I, 0, 1) from labels")
class UniCLObjective(Objective):
    """UniCL (Yang et al., 2022, "Unified Contrastive Learning in Image-Text-Label Space"), in the form of
    Silva-Rodríguez et al., "A Reality Check of Vision-Language Pre-training in Radiology" (IPMI 2025).

    With normalised image/text embeddings u_i, v_j over the global batch, learnable scale s (1/0.07,
    clamped at 100) and binary positives Y (NaN, 0 and -1 count as 0), T = clip(Y_img Y_txt^T + I, 0, 1):

        L = -1/2N sum_i [ sum_j T_ij / sum_k T_ik · log softmax_j(s u_i·v_j)
                          + sum_j T_ji / sum_k T_ki · log softmax_j(s v_i·u_j) ]

    Samples without a report take a templated prompt from their labels (``prompts=True``, the image-label
    half of UniCL); with ``prompts=False`` only samples with report text enter.
    """

    requires_text = True
    requires_labels = True

    @classmethod
    def trains_without_reports(cls, option: Callable[[str], object]) -> str | None:
        return "prompts composed from the labels" if option("prompts") else None

    def __init__(self, class_names: list[str], init_temperature: float = 0.07, max_scale: float = 100.0,
                 prompts: bool = True) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.logit_scale = LogitScale(init_temperature, max_scale)
        self.prompts = prompts

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        if self.prompts:
            keep = torch.ones_like(batch["has_text"])
            text = model.encode_text(reports_or_prompts(batch, self.class_names))
        else:
            keep = batch["has_text"]
            text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        image = model.encode_image(batch["image"][keep])
        labels = positives(batch["labels"][keep])
        scale = self.logit_scale()
        loss = unicl_loss(image, text, labels, labels, scale)
        return {"loss": loss, "unicl": loss.detach(), "logit_scale": scale.detach()}
