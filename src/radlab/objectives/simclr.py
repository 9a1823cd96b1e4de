"""SimCLR: contrastive learning between two augmented views of each image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.augment import TwoViews
from radlab.objectives.base import OBJECTIVES, Objective


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy over 2B views, the positive of view i being its pair:

        l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau),
        L = 1/2B sum_i l(i, pair(i)),   sim = cosine similarity.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


@OBJECTIVES.register("simclr", "SimCLR: NT-Xent between two augmented views, projection MLP (image only)")
class SimCLRObjective(Objective):
    """SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

    Two radiograph views per image (``radlab.data.augment.TwoViews``), pooled tower features h, projection
    g(h) = W2 ReLU(BN(W1 h)), NT-Xent loss (see ``nt_xent``) with temperature tau (0.1-0.5; default 0.2).
    Probes read h, not g(h).
    """

    tower_only = True

    def __init__(self, image_dim: int, proj_dim: int = 128, hidden_dim: int = 512, temperature: float = 0.2,
                 crop_scale: tuple[float, float] = (0.3, 1.0), hflip: bool = False) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(image_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                        nn.ReLU(inplace=True), nn.Linear(hidden_dim, proj_dim))
        self.temperature = temperature
        self.crop_scale, self.hflip = tuple(crop_scale), hflip

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        return TwoViews(image_size, scale=self.crop_scale, hflip=self.hflip)

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]] * 2
        pooled = model.image_features(torch.cat(views[:2]))
        z1, z2 = self.projection(pooled).chunk(2)
        loss = nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            positive = F.cosine_similarity(z1, z2, dim=-1).mean()
        return {"loss": loss, "nt_xent": loss.detach(), "positive_cosine": positive}
