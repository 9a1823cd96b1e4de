"""The losses of DINOv2 (Oquab et al., 2023, "DINOv2: Learning Robust Visual Features without Supervision"):
the DINO class-token loss (Caron et al., 2021), the iBOT masked-patch loss (Zhou et al., 2022) and the KoLeo
regulariser (Sablayrolles et al., 2019), with teacher centering or Sinkhorn-Knopp normalisation.

Notation: student logits s, teacher logits t (both [*, K] over K prototypes), student temperature tau_s,
teacher temperature tau_t, center c.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from radlab.train.distributed import global_count, world_size

CENTERINGS = ("centering", "sinkhorn_knopp")


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets by Sinkhorn-Knopp (Caron et al., 2020, SwAV), as DINOv2 uses in place of centering.

    Q = exp(t / tau_t)^T [K, B], scaled to sum 1, then ``iterations`` times: rows scaled to sum 1/K (equal
    prototype usage), columns scaled to sum 1/B. Returns B·Q^T [B, K], whose rows are distributions. The
    iterations run on log Q (the same arithmetic), so sharp teachers do not underflow. Under DDP, B and the
    sums over samples run over the global batch (every rank's rows), so each rank gets its rows of the
    single-process result.
    """
    log_q = (teacher_logits.float() / temperature).T
    k = log_q.shape[0]
    b = global_count(log_q.shape[1], log_q.device)
    if b == 0:  # no rank has a row (iBOT with nothing masked anywhere): every rank returns here alike
        return teacher_logits.float().new_zeros(teacher_logits.shape)
    log_q = log_q - _global_logsumexp(torch.logsumexp(log_q.flatten(), dim=0, keepdim=True))
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp(torch.logsumexp(log_q, dim=1, keepdim=True)) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(b)
    return (log_q.exp() * b).T


def _global_logsumexp(local: torch.Tensor) -> torch.Tensor:
    """log sum exp over ranks of per-rank logsumexp values (elementwise); the input on a single process."""
    if world_size() == 1:
        return local
    peak = local.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    total = (local - peak).exp()
    dist.all_reduce(total)
    return peak + total.log()


class _TeacherTargets(nn.Module):
    """Teacher logits -> target distributions: softmax((t - c) / tau_t) with c <- m c + (1 - m) mean(t), or
    Sinkhorn-Knopp. The center is read before it is updated with the current batch (as DINOv2 does)."""

    def __init__(self, out_dim: int, center_momentum: float = 0.9, centering: str = "centering",
                 sinkhorn_iterations: int = 3) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        self.center_momentum = center_momentum
        self.sinkhorn_iterations = sinkhorn_iterations
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def targets(self, teacher_logits: torch.Tensor, teacher_temp: float, update: bool = True) -> torch.Tensor:
        """[N, K] teacher logits -> [N, K] target distributions (no gradient)."""
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits, teacher_temp, self.sinkhorn_iterations)
        probs = F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)
        if update:
            self.update_center(teacher_logits)
        return probs

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean(t), the mean over the global batch (all ranks' rows) under DDP."""
        batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)
        n = global_count(len(teacher_logits), teacher_logits.device)
        if n == 0:  # no rank has rows (nothing masked anywhere): the center stays
            return
        if world_size() > 1:
            dist.all_reduce(batch_sum)
        batch_center = batch_sum / max(n, 1)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class DINOLoss(_TeacherTargets):
    """DINO self-distillation on class tokens (Caron et al., 2021; DINOv2 §4).

    With teacher targets P_t^(i) = softmax((t^(i) - c) / tau_t) for global view i and student crops j (the
    global views first, in the same order, then the local crops):

        L = 1/|pairs| sum_{i, j != i} 1/B sum_b [ - sum_k P_t^(i)_bk log softmax(s^(j)_b / tau_s)_k ]

    which is the normalisation of the official code ((n_g - 1) n_g + n_g n_l terms) and of lightly's DINOLoss.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "centering", sinkhorn_iterations: int = 3) -> None:
        super().__init__(out_dim, center_momentum, centering, sinkhorn_iterations)
        self.student_temp = student_temp

    def forward(self, student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor],
                teacher_temp: float, update: bool = True) -> torch.Tensor:
        """``student_logits``: one [B, K] per crop; ``teacher_logits``: one [B, K] per global crop."""
        targets = self.targets(torch.cat(teacher_logits), teacher_temp, update)
        return self.cross_entropy(student_logits, list(targets.chunk(len(teacher_logits))))

    def cross_entropy(self, student_logits: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """The loss from teacher targets already computed (one [B, K] distribution per global crop)."""
        total, terms = student_logits[0].new_zeros((), dtype=torch.float32), 0
        for j, student in enumerate(student_logits):
            log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
            for i, target in enumerate(targets):
                if i == j:
                    continue
                total = total - (target * log_probs).sum(dim=-1).mean()
                terms += 1
        if terms == 0:
            raise ValueError("the DINO loss needs at least two crops")
        return total / terms


class IBOTPatchLoss(_TeacherTargets):
    """iBOT masked-image modelling on patch tokens (Zhou et al., 2022; DINOv2 §4).

    For masked patch p of image b (M_b masked patches), student logits from the masked input and teacher
    targets from the unmasked input:

        L = 1/B sum_b 1/M_b sum_{p masked in b} [ - sum_k P_t(p)_k log softmax(s(p) / tau_s)_k ]

    B counts every image, masked or not, as in the official ``forward_masked`` and lightly's IBOTPatchLoss.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "centering", sinkhorn_iterations: int = 3) -> None:
        super().__init__(out_dim, center_momentum, centering, sinkhorn_iterations)
        self.student_temp = student_temp

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                teacher_temp: float, update: bool = True) -> torch.Tensor:
        """Logits [M, K] of the masked patches in ``mask[mask]`` order; ``mask`` [B, ...] bool."""
        mask = mask.flatten(1)
        targets = self.targets(teacher_logits, teacher_temp, update)  # also with no rows: collectives run
        per_patch = -(targets * F.log_softmax(student_logits.float() / self.student_temp, dim=-1)).sum(dim=-1)
        weight = (1.0 / mask.sum(dim=1, keepdim=True).clamp(min=1)).expand_as(mask)[mask]
        return (per_patch * weight).sum() / mask.shape[0]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo entropy estimator (Sablayrolles et al., 2019, "Spreading vectors for similarity search"):

        L = -1/n sum_i log( min_{j != i} ||x_i - x_j|| )   on L2-normalised x,

    which pushes the features of a batch apart. DINOv2 applies it per global view with weight 0.1. It runs in
    float32 with autocast off, as DINOv2's does: near-identical features' nearest neighbours need more than
    bf16's precision (about 0.004 near cosine 1). DINOv2 computes it on each rank's rows; a rank with one row has
    no neighbour, and the term is 0 there (not the constant -log eps, which has no gradient).
    """
    if len(features) < 2:
        return features.float().sum() * 0.0
    with torch.autocast(features.device.type, enabled=False):
        x = F.normalize(features.float(), dim=-1, eps=eps)
        with torch.no_grad():
            similarity = x @ x.T
            similarity.fill_diagonal_(-2.0)
            nearest = similarity.argmax(dim=1)
        distance = (x - x[nearest]).norm(dim=-1)
        return -(distance + eps).log().mean()


@torch.no_grad()
def row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Each row's entropy -sum_k p_k log p_k (nats): 0 for one-hot collapse, log K for uniform collapse."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean per-row entropy (``row_entropy``)."""
    return row_entropy(probs).mean()


@torch.no_grad()
def effective_rank(features: torch.Tensor) -> torch.Tensor:
    """Effective rank exp(H(sigma / sum sigma)) of centred features (Roy & Vetterli, 2007); 1 when the features
    collapse to a line, up to min(B, D) when they spread over every direction."""
    x = features.float() - features.float().mean(dim=0, keepdim=True)
    sigma = torch.linalg.svdvals(x)
    p = sigma / sigma.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
