"""Running a ViT image tower on masked or partial patch sequences, as masked-image objectives need.

timm's ViT has no mask token, so ``vit_tokens`` runs its stages by hand (patch embedding, mask-token
substitution, position embeddings resampled to the input grid, blocks, final norm). HF Dinov2 towers
(RAD-DINO, DINOv2) carry their own mask token and take ``bool_masked_pos``; ``masked_forward`` picks the
route from the tower.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def timm_vit(tower: nn.Module) -> VisionTransformer | None:
    """The timm ViT inside an image tower (``TimmImageTower.backbone``), if any."""
    backbone = getattr(tower, "backbone", tower)
    return backbone if isinstance(backbone, VisionTransformer) else None


def hf_dinov2(tower: nn.Module) -> nn.Module | None:
    """The Hugging Face Dinov2 model inside a tower, if any (matched by class name, so HF stays optional)."""
    for module in tower.modules():
        if type(module).__name__ in ("Dinov2Model", "Dinov2WithRegistersModel"):
            return module
    return None


def vit_embed(vit: VisionTransformer, images: torch.Tensor, mask: torch.Tensor | None = None,
              mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Patch embeddings with masked patches replaced by ``mask_token`` (before position embeddings, as in
    iBOT/DINOv2), plus position embeddings resampled to the grid of ``images``.

    Returns prefix tokens [B, P, D] (class/register), patch tokens [B, N, D] and the patch grid (h, w).
    ``mask`` is [B, N] or [B, h, w], True where a patch is masked.
    """
    embed = vit.patch_embed
    x = embed.proj(images)
    b, d, h, w = x.shape
    x = embed.norm(x.flatten(2).transpose(1, 2))
    if mask is not None:
        if mask_token is None:
            raise ValueError("masking a timm ViT needs a mask token")
        x = torch.where(mask.reshape(b, h * w, 1), mask_token.to(x.dtype).view(1, 1, d), x)
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    prefix_tokens = torch.cat(prefix, dim=1) if prefix else x.new_zeros(b, 0, d)
    if vit.pos_embed is not None:
        n_pos_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        pos = vit.pos_embed
        if (h, w) != tuple(embed.grid_size):
            pos = resample_abs_pos_embed(pos, new_size=(h, w), old_size=embed.grid_size,
                                         num_prefix_tokens=n_pos_prefix)
        x = x + pos[:, n_pos_prefix:]
        if n_pos_prefix:
            prefix_tokens = prefix_tokens + pos[:, :n_pos_prefix]
    return vit.pos_drop(prefix_tokens), vit.pos_drop(x), (h, w)


def vit_encode(vit: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Pre-norm, transformer blocks and final norm over a token sequence [B, T, D]."""
    return vit.norm(vit.blocks(vit.norm_pre(tokens)))


def vit_tokens(vit: VisionTransformer, images: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> torch.Tensor:
    """Final-norm tokens [B, P + N, D] of a timm ViT on any image size, masked patches replaced."""
    prefix, patches, _ = vit_embed(vit, images, mask, mask_token)
    return vit_encode(vit, torch.cat([prefix, patches], dim=1))


def masked_forward(tower: nn.Module, images: torch.Tensor, mask: torch.Tensor | None = None,
                   mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embedding [B, D] and patch tokens [B, N, D] of an image tower with patches masked.

    timm ViTs use ``mask_token`` (owned by the caller) and pool as the tower does (``forward_head``); HF
    Dinov2 towers (``radlab.models.external.hf_vision``: its channel ``adapter``, then the model) use the
    model's own mask token and pool by the normed class token, as ``HFVisionTower`` does.
    """
    vit = timm_vit(tower)
    if vit is not None:
        tokens = vit_tokens(vit, images, mask, mask_token)
        return vit.forward_head(tokens, pre_logits=True), tokens[:, vit.num_prefix_tokens:]
    hf = hf_dinov2(tower)
    if hf is not None:
        adapter = getattr(tower, "adapter", None)
        pixels = adapter(images) if adapter is not None else _match_channels(images, hf.config.num_channels)
        masked = mask.flatten(1) if mask is not None else None
        hidden = hf(pixel_values=pixels, bool_masked_pos=masked).last_hidden_state
        n_prefix = 1 + int(getattr(hf.config, "num_register_tokens", 0) or 0)
        return hidden[:, 0], hidden[:, n_prefix:]
    raise TypeError(f"masked forward needs a timm ViT or HF Dinov2 tower, got {type(tower).__name__}")


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.expand(-1, channels, -1, -1) if images.shape[1] == 1 and channels != 1 else images


def patch_size(tower: nn.Module) -> int:
    """The side in pixels of the ViT tower's (square) patches."""
    vit = timm_vit(tower)
    if vit is not None:
        return int(vit.patch_embed.patch_size[0])
    hf = hf_dinov2(tower)
    if hf is not None:
        return int(hf.config.patch_size)
    raise TypeError(f"no patch grid for {type(tower).__name__}")


def patch_grid(tower: nn.Module, image_size: int) -> tuple[int, int]:
    """The patch grid (h, w) of a square image of ``image_size`` pixels."""
    side = image_size // patch_size(tower)
    return side, side
