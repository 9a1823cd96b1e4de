"""SimCLR: NT-Xent against lightly's NTXentLoss, and the loss falls when training on phantom-like images."""

from __future__ import annotations

import pytest
import torch

from radlab.models.encoder import RadEncoder
from radlab.models.image_towers import IMAGE_TOWERS
from radlab.objectives.simclr import SimCLRObjective, nt_xent

TINY_TOWER = {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_lightly(temperature: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    expected = lightly_loss.NTXentLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), expected, rtol=1e-5, atol=1e-6)


def test_nt_xent_is_the_papers_formula() -> None:
    """l(k) = -log exp(s_k,pair(k)/tau) / sum_{m != k} exp(s_km/tau), averaged over the 2N views (float64 kept;
    the global-batch gather is checked against one process in tests/train/test_distributed.py)."""
    z1, z2 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.T / 0.3
    terms = [-sim[k, (k + 5) % 10] + torch.logsumexp(sim[k, [m for m in range(10) if m != k]], 0) for k in range(10)]
    torch.testing.assert_close(nt_xent(z1, z2, 0.3), torch.stack(terms).mean(), rtol=0, atol=1e-12)


def test_nt_xent_is_low_for_matched_views() -> None:
    z = torch.randn(16, 32)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1) < nt_xent(z, torch.randn(16, 32), 0.1)


def test_simclr_loss_falls() -> None:
    torch.manual_seed(0)
    model = RadEncoder(IMAGE_TOWERS.build("vit_tiny_patch16_224", image_size=32, **TINY_TOWER), None, 16)
    objective = SimCLRObjective(image_dim=48, proj_dim=32, hidden_dim=64, temperature=0.2).train()
    transform = objective.train_transform(32)
    images = torch.rand(16, 1, 32, 32) * torch.linspace(0, 1, 32).view(1, 1, 1, 32)
    params = [p for m in (model, objective) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    losses = []
    for _ in range(12):
        views = [transform(image) for image in images]
        batch = {"image": [torch.stack([v[k] for v in views]) for k in range(2)]}
        terms = objective(model, batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
