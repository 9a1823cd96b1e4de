"""SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
ICML, arXiv:2002.05709): contrastive learning between two augmented views of each image.

Each of the N images of the global batch gives two views; their projections, L2-normalised, form 2N
embeddings z_1..z_2N, and view k's positive is the other view of the same image, pair(k). NT-Xent with
temperature tau:

    l(k) = -log exp(z_k·z_pair(k) / tau) / sum_{m != k} exp(z_k·z_m / tau),     L = 1/2N sum_k l(k)

The negatives are the 2N-2 other views of the *global* batch: under DDP each rank gathers every rank's
embeddings with gradients (``radlab.train.distributed.gather_with_grad``) and scores its own rows against all
2N columns, as the reference implementation does with its cross-replica concat, so W ranks train exactly
like one process holding the whole batch. The projection head's BatchNorm is global on several GPUs (the
engine converts it to SyncBatchNorm, as the reference's cross-replica BN) and per rank on CPU (gloo).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.augment import TwoViews
from radlab.objectives.base import OBJECTIVES, Objective
from radlab.train.distributed import gather_with_grad, global_mean


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy over the 2N views of the global batch, view k's positive its pair:

        l(k) = -log exp(sim(z_k, z_pair(k)) / tau) / sum_{m != k} exp(sim(z_k, z_m) / tau),
        L = 1/2N sum_k l(k),   sim = cosine similarity.

    ``z1[i]`` and ``z2[i]`` are the two views of this rank's i-th image. The columns are all ranks' first
    views then all ranks' second views (gathered with gradients); this rank scores its own 2B rows against
    them and returns its share of the global mean (``global_mean``). Ranks may hold different B. On a single
    process this is the usual NT-Xent over the batch. The similarities are float32 (autocast off)."""
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z1, z2 = F.normalize(z1.to(dtype), dim=-1), F.normalize(z2.to(dtype), dim=-1)
    all_z1, offset = gather_with_grad(z1)
    all_z2, _ = gather_with_grad(z2)
    n_global = len(all_z1)
    with torch.autocast(z1.device.type, enabled=False):
        logits = torch.cat([z1, z2]) @ torch.cat([all_z1, all_z2]).T / temperature
    local = torch.arange(len(z1), device=z1.device) + offset
    own = torch.cat([local, local + n_global])  # each row's own column
    pair = torch.cat([local + n_global, local])
    logits = logits.masked_fill(own[:, None] == torch.arange(2 * n_global, device=z1.device), float("-inf"))
    return global_mean(F.cross_entropy(logits, pair, reduction="none"), 2 * n_global)


@OBJECTIVES.register("simclr", "SimCLR: NT-Xent between two augmented views, projection MLP (image only)")
class SimCLRObjective(Objective):
    """SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

    Two radiograph views per image (``radlab.data.augment.TwoViews``), pooled tower features h, projection
    g(h) = W2 ReLU(BN(W1 h)), NT-Xent loss (see ``nt_xent``) with temperature tau (0.1-0.5; default 0.2)
    and the global batch's negatives. Probes read h, not g(h).
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
