"""CLIP / InfoNCE image-text contrastive objective over the global batch, and the contrastive helpers the
other image-text objectives share (gathering across ranks, soft-target cross-entropy)."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from radlab.models.encoder import ClampedScale
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.train.distributed import gather_with_grad, global_mean


class LogitScale(nn.Module, ClampedScale):
    """A learnable inverse temperature s = exp(t), initialised to 1/τ0; t is clamped into [0, log ``max_scale``]
    after every optimiser step (``ClampedScale``), not in forward."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor([math.log(1.0 / init_temperature)]))  # 1-d: FSDP shards it
        self.max_scale = max_scale

    def scale_parameter(self) -> nn.Parameter:
        return self.log_scale

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()[0]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``-sum_j t_ij log softmax(logits)_ij`` against target distributions."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              weight_image: float = 0.5) -> torch.Tensor:
    """InfoNCE over matched, L2-normalised pairs (row i of each), both directions, over the global batch.

    Each rank holds its rows; the other ranks' rows are gathered with gradients and this rank scores only
    its own rows against all columns (open_clip's local loss), returning its share of the global mean
    (``global_mean``), so W ranks with B rows each train exactly like one process with W·B rows.
    ``weight_image`` weighs image->text against text->image (CLIP: 1/2; ConVIRT: λ). Like ``nt_xent``, the
    logits are computed in float32 with autocast off, whatever precision the caller runs in (bf16 logits at
    scale 100 move the loss by 1e-3 to 1e-2); embeddings that come in a lower precision are normalised again
    in float32 (float32 ones, unit vectors already, are taken as they are)."""
    dtype = torch.promote_types(torch.promote_types(image.dtype, text.dtype), torch.float32)
    with torch.autocast(image.device.type, enabled=False):
        if image.dtype != dtype or text.dtype != dtype:  # unit vectors no more once rounded to bf16/fp16
            image, text = F.normalize(image.to(dtype), dim=-1), F.normalize(text.to(dtype), dim=-1)
        all_image, offset = gather_with_grad(image)
        all_text, _ = gather_with_grad(text)
        target = torch.arange(len(image), device=image.device) + offset
        scale = logit_scale.to(dtype)
        image_to_text = F.cross_entropy(scale * image @ all_text.T, target, reduction="none")
        text_to_image = F.cross_entropy(scale * text @ all_image.T, target, reduction="none")
        per_row = weight_image * image_to_text + (1 - weight_image) * text_to_image
    return global_mean(per_row, len(all_image))


def paired_embeddings(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised embeddings of the images and reports of the samples that have report text."""
    keep = batch["has_text"]
    image = model.encode_image(batch["image"][keep])
    text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
    return image, text


@OBJECTIVES.register("clip", "CLIP: symmetric image-text InfoNCE with a learnable temperature")
class ClipObjective(Objective):
    """CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision").

    With normalised image and text embeddings u_i, v_i over the N pairs of the global batch and a learnable
    scale s = exp(t) (initialised to 1/0.07, clamped at 100):

        L = 1/2N sum_i [ -log exp(s u_i·v_i) / sum_j exp(s u_i·v_j)  -log exp(s u_i·v_i) / sum_j exp(s u_j·v_i) ]

    Only samples with real report text enter the loss.
    """

    requires_text = True

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_temperature, max_scale)

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        image, text = paired_embeddings(model, batch)
        scale = self.logit_scale()
        loss = clip_loss(image, text, scale)
        return {"loss": loss, "clip": loss.detach(), "logit_scale": scale.detach()}


def positives(labels: torch.Tensor) -> torch.Tensor:
    """Binary label matrix for target construction: 1 where a finding is positive; negative, uncertain (-1)
    and unannotated (NaN) count as 0."""
    return (torch.nan_to_num(labels, nan=0.0) == 1).to(torch.float32)


def reports_or_prompts(batch: dict, class_names: list[str]) -> list[str]:
    """The batch's report texts, with a templated prompt from the labels wherever a sample has no report.
    Prompt choices are drawn from torch's global RNG, which training states save and restore."""
    from radlab.data.prompts import compose_prompts

    rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,))))
    labels = batch["labels"].cpu().numpy()
    return [text if has else compose_prompts(row, class_names, rng)
            for text, has, row in zip(batch["text"], batch["has_text"].tolist(), labels, strict=True)]
