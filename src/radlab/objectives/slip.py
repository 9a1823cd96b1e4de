"""SLIP: CLIP's image-text InfoNCE plus SimCLR's NT-Xent between two further views of each image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.augment import BaseAndTwoViews
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.objectives.clip import LogitScale, clip_loss
from radlab.objectives.simclr import nt_xent


def ssl_head(image_dim: int, hidden_dim: int, proj_dim: int) -> nn.Sequential:
    """SLIP's image MLP: three linear layers with BatchNorm and ReLU between them."""
    return nn.Sequential(nn.Linear(image_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, proj_dim))


@OBJECTIVES.register("slip", "SLIP: CLIP on a base view + SimCLR NT-Xent between two more views, image MLP head")
class SLIPObjective(Objective):
    """SLIP (Mu, Kirillov, Wagner, Xie, ECCV 2022, "SLIP: Self-supervision meets Language-Image
    Pre-training", arXiv:2112.12750), with reports as the texts.

    Each image gives three views (``BaseAndTwoViews``): a base view x for the image-text term and two
    self-supervision views. With u_i the normalised image embedding of the base view (pooled tower features
    through the encoder's ``image_proj``), v_i the report's, ℓ the symmetric InfoNCE of ``clip_loss`` over the
    N global pairs with a report (learnable scale s, 1/``init_temperature``, clamped at ``max_scale``), and
    z_1, z_2 the two views' pooled features through the separate image MLP g (``ssl_head``):

        L_CLIP   = 1/2N sum_i [ -log exp(s u_i·v_i) / sum_j exp(s u_i·v_j)  -log exp(s u_i·v_i) / sum_j exp(s u_j·v_i) ]
        L_SimCLR = NT-Xent(g(h_1), g(h_2); τ)            over all images, with or without a report (``nt_xent``)
        L        = L_CLIP + ``ssl_scale`` · L_SimCLR,     ssl_scale = 1, τ = ``ssl_temperature`` = 0.1 (SLIP's)

    g is SLIP's MLP (Linear, BN, ReLU, Linear, BN, ReLU, Linear to ``proj_dim`` = 256), applied to each view
    separately so BatchNorm's statistics are per view, as in the reference; its width ``hidden_dim`` is 512
    here instead of SLIP's 4096, sized for ViT-Tiny's 192-wide features (SLIP's towers are 384-1024 wide) and
    the width radlab's SimCLR and DeCLIP heads use. The three views go through the image tower in one pass
    (the reference runs three; the same for towers without batch statistics, such as the ViTs).

    Crops: the base view covers ``base_crop_scale`` (0.5-1) of the image, as SLIP's CLIP view, with no
    intensity change or flip. The self-supervision views are radiograph views (``radiograph_view``:
    brightness/contrast jitter, gamma, blur, no hue or saturation) of ``ssl_crop_scale`` = (0.3, 1) instead of
    SLIP's (0.08, 1): an 8% crop of a chest film is a patch of rib and lung texture with no anatomy to
    relate, and 0.3 is the floor radlab's SimCLR and DeCLIP use. ``hflip`` flips the self-supervision views.
    """

    requires_text = True

    @classmethod
    def trains_without_reports(cls, option: Callable[[str], object]) -> str | None:
        return "its SimCLR term" if float(option("ssl_scale")) > 0 else None

    def __init__(self, image_dim: int, ssl_scale: float = 1.0, ssl_temperature: float = 0.1, proj_dim: int = 256,
                 hidden_dim: int = 512, init_temperature: float = 0.07, max_scale: float = 100.0,
                 base_crop_scale: tuple[float, float] = (0.5, 1.0),
                 ssl_crop_scale: tuple[float, float] = (0.3, 1.0), hflip: bool = False) -> None:
        super().__init__()
        if ssl_scale < 0 or ssl_temperature <= 0:
            raise ValueError(f"ssl_scale {ssl_scale}, ssl_temperature {ssl_temperature}: need >= 0 and > 0")
        self.logit_scale = LogitScale(init_temperature, max_scale)
        self.image_mlp = ssl_head(image_dim, hidden_dim, proj_dim)
        self.ssl_scale, self.ssl_temperature = ssl_scale, ssl_temperature
        self.base_crop_scale, self.ssl_crop_scale = tuple(base_crop_scale), tuple(ssl_crop_scale)
        self.hflip = hflip

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        return BaseAndTwoViews(image_size, base_scale=self.base_crop_scale, scale=self.ssl_crop_scale,
                               hflip=self.hflip)

    def terms(self, image: torch.Tensor, text: torch.Tensor,
              ssl: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss from embeddings: ``image`` (base views) and ``text`` normalised, rows paired, for this
        rank's samples with a report; ``ssl`` the image-MLP outputs of both self-supervision views of all its
        images."""
        scale = self.logit_scale()
        clip = clip_loss(image, text, scale)
        ssl_loss = nt_xent(*ssl, self.ssl_temperature)
        loss = clip + self.ssl_scale * ssl_loss
        return {"loss": loss, "clip": clip.detach(), "ssl": ssl_loss.detach(), "logit_scale": scale.detach()}

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]] * 3
        keep = batch["has_text"]
        out = model.image_output(torch.cat(views[:3]))
        _, h1, h2 = out.pooled.chunk(3)
        image = F.normalize(model.project_image(out.rows(slice(0, len(views[0])))), dim=-1)[keep]
        text = model.encode_text({k: v[keep] for k, v in batch["tokens"].items()})
        return self.terms(image, text, (self.image_mlp(h1), self.image_mlp(h2)))
