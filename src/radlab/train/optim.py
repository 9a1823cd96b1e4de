"""AdamW parameter groups (no weight decay on norms, biases and embeddings; layer-wise lr decay for ViT
image towers) and a cosine schedule with linear warm-up."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

# timm ViTs (image_tower.backbone.*) and Hugging Face ViT/Dinov2 towers such as RAD-DINO (image_tower.model.*)
_BLOCK = re.compile(r"image_tower\.(?:backbone\.blocks|model\.encoder\.layer)\.(\d+)\.")
# DINOv2's objective holds a timm tower's iBOT mask token (``objective.mask_token``): an embedding, as in DINOv2
_EMBED = re.compile(r"image_tower\.(?:backbone\.(?:cls_token|reg_token|pos_embed|patch_embed)|model\.embeddings\.)"
                    r"|(?:^|\.)objective\.mask_token$")
_PATCH_EMBED = re.compile(r"image_tower\.(?:backbone\.patch_embed|model\.embeddings\.patch_embeddings)\.")
_NO_DECAY_NAMES = ("cls_token", "reg_token", "register_tokens", "pos_embed", "position_embeddings", "mask_token")


def vit_layer_ids(module: nn.Module) -> tuple[dict[str, int], int]:
    """Layer id per parameter name for layer-wise lr decay: 0 for the ViT's patch/position embeddings,
    i + 1 for block i, and L + 1 (the top) for everything else, where L is the number of blocks."""
    names = [name for name, _ in module.named_parameters()]
    blocks = {int(m.group(1)) for name in names if (m := _BLOCK.search(name))}
    top = len(blocks) + 1
    ids = {}
    for name in names:
        if m := _BLOCK.search(name):
            ids[name] = int(m.group(1)) + 1
        elif _EMBED.search(name):
            ids[name] = 0
        else:
            ids[name] = top
    return ids, top


def param_groups(module: nn.Module, weight_decay: float, lr: float, layer_decay: float | None = None,
                 patch_embed_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters grouped by (weight decay, lr scale).

    No weight decay on 1-d parameters (biases, norms, temperatures) and on ViT token/position embeddings.
    With ``layer_decay`` d, a ViT image tower's layer l gets lr * d^(L + 1 - l) (BEiT-style), so early
    blocks move least. The image tower's patch embedding gets a further ``patch_embed_lr_scale`` (DINOv2:
    0.2). Frozen parameters (``requires_grad=False``, e.g. EMA teachers) are left out; each parameter
    appears once even if shared. Each group's ``decay`` says whether a weight-decay schedule applies to it."""
    ids, top = vit_layer_ids(module) if layer_decay is not None else ({}, 0)
    groups: dict[tuple[bool, int, bool], dict] = {}
    seen: set[int] = set()
    for name, param in module.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        decay = param.ndim >= 2 and not name.endswith(_NO_DECAY_NAMES)
        layer = ids.get(name, top)
        patch = patch_embed_lr_scale != 1.0 and bool(_PATCH_EMBED.search(name))
        scale = (layer_decay ** (top - layer) if layer_decay is not None else 1.0) * (
            patch_embed_lr_scale if patch else 1.0)
        group = groups.setdefault((decay, layer, patch), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                          "decay": decay, "lr": lr * scale, "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                       floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` times each group's lr."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cosine_weight_decay(optimizer: torch.optim.Optimizer, step: int, total: int, start: float, end: float) -> float:
    """Set every decaying group's weight decay to the cosine from ``start`` (step 0) to ``end`` (step
    ``total``), as DINO and DINOv2 schedule it (0.04 -> 0.4 and 0.04 -> 0.2); returns the value. Only groups
    marked ``decay`` (see ``param_groups``) follow it; norms, biases and embeddings stay at 0. Stateless, so a
    resumed run gets the same values."""
    progress = min(1.0, step / max(1, total))
    value = end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        if group["decay"]:
            group["weight_decay"] = value
    return value
