"""Masked autoencoder (MAE) pre-training of a timm ViT image tower."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.models.vision_transformer import Block
from torch import nn

from radlab.data.augment import radiograph_view
from radlab.models.vit_masking import timm_vit, vit_embed, vit_encode
from radlab.objectives.base import OBJECTIVES, Objective


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings [h*w, dim] (half the channels per axis), as MAE's decoder."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    parts = [f(c.flatten()[:, None] * omega[None]) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    out = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(out, (0, dim - out.shape[1]))


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C] in row-major patch order (the ViT's token order)."""
    b, c, h, w = images.shape
    x = images[:, :, : h // patch * patch, : w // patch * patch]
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


@OBJECTIVES.register("mae", "MAE: reconstruct 75% randomly masked patches, light decoder (image only, timm ViT)")
class MAEObjective(Objective):
    """MAE (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners").

    The encoder sees only a random 25% of the patches (no mask tokens); a light transformer decoder takes
    the encoded visible tokens plus a shared mask token at every masked position (with fixed sine-cosine
    positions) and predicts pixels. With per-patch normalised targets x̂_p = (x_p - mean(x_p)) / sqrt(var(x_p)
    + 1e-6) and the set M of masked patches:

        L = 1/|M| sum_{p in M} ||decoder(p) - x̂_p||^2 / (p^2 C)

    (the reference's ``forward_loss`` with ``norm_pix_loss``; var is the unbiased variance). The decoder is owned
    here and discarded after pre-training.

    Departures from the reference implementation (facebookresearch/mae ``models_mae.py``, ``main_pretrain.py``)
    that leave the loss's definition as above:

    - the decoder gets the patch tokens only: the encoder's class token is not passed on (MAE appends it to
      the decoder's sequence and drops its prediction);
    - the encoder's position embeddings are the timm ViT's learned ones (MAE freezes fixed 2-D sine-cosine
      ones in the encoder too); the decoder's are fixed sine-cosine, as MAE's;
    - the decoder's final LayerNorm has eps 1e-5 (MAE: 1e-6; its blocks' are 1e-6, as MAE's), its linear
      layers keep PyTorch's default initialisation (MAE: Xavier-uniform), and its default size is small
      (128-d, 2 blocks, 4 heads; MAE: 512-d, 8 blocks, 16 heads) for the small towers trained here;
    - augmentation: crops of (0.4, 1) of the area (MAE: (0.2, 1)) with brightness/contrast jitter and random
      gamma (MAE: none), no horizontal flip by default (MAE flips; a flip swaps a radiograph's sides);
    - the visible count is round(N (1 - mask_ratio)) (MAE truncates), the same for the usual grids.
    """

    tower_only = True

    def __init__(self, model: nn.Module, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, norm_pix_loss: bool = True, crop_scale: tuple[float, float] = (0.4, 1.0),
                 hflip: bool = False) -> None:
        super().__init__()
        vit = timm_vit(model.image_tower)
        if vit is None:
            raise TypeError("MAE needs a timm ViT image tower")
        self.patch = vit.patch_embed.patch_size[0]
        channels = vit.patch_embed.proj.in_channels
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = nn.Sequential(*[Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                       for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * channels)
        self.crop_scale, self.hflip = tuple(crop_scale), hflip

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return radiograph_view(image_size, self.crop_scale, blur_p=0.0, jitter=0.2, hflip=self.hflip)

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"][0] if isinstance(batch["image"], list) else batch["image"]
        vit = timm_vit(model.image_tower)
        prefix, patches, (h, w) = vit_embed(vit, images)
        b, n, _ = patches.shape
        n_keep = max(1, int(round(n * (1 - self.mask_ratio))))
        order = torch.rand(b, n, device=images.device).argsort(dim=1)
        keep = order[:, :n_keep]
        visible = patches.gather(1, keep[..., None].expand(-1, -1, patches.shape[-1]))
        latent = vit_encode(vit, torch.cat([prefix, visible], dim=1))[:, prefix.shape[1]:]
        embedded = self.decoder_embed(latent)  # bf16 under autocast, while the encoder's final norm gives fp32
        tokens = self.mask_token.to(embedded.dtype).expand(b, n, -1).clone()
        tokens = tokens.scatter(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), embedded)
        tokens = tokens + sincos_2d(h, w, tokens.shape[-1]).to(tokens)
        pred = self.decoder_pred(self.decoder_norm(self.decoder(tokens)))
        target = patchify(images, self.patch).float()
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        masked = torch.ones(b, n, dtype=torch.bool, device=images.device)
        masked.scatter_(1, keep, False)
        loss = ((pred.float() - target) ** 2).mean(-1)[masked].mean()
        return {"loss": loss, "mse_masked": loss.detach()}
