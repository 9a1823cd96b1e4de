"""MAE: patchify order, masking ratio, normalised-pixel loss on masked patches, and the loss falls."""

from __future__ import annotations

import torch

from radlab.models.encoder import RadEncoder
from radlab.models.image_towers import IMAGE_TOWERS
from radlab.objectives.mae import MAEObjective, patchify, sincos_2d

TINY_TOWER = {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}


def tiny_model() -> RadEncoder:
    torch.manual_seed(0)
    return RadEncoder(IMAGE_TOWERS.build("vit_tiny_patch16_224", image_size=32, **TINY_TOWER), None, 16)


def test_patchify_matches_patch_embedding_order() -> None:
    """A conv patch embedding with weights w equals patchify(x) @ w flattened in the same order."""
    model = tiny_model()
    proj = model.image_tower.backbone.patch_embed.proj
    images = torch.randn(2, 1, 32, 32)
    expected = proj(images).flatten(2).transpose(1, 2)
    weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)
    torch.testing.assert_close(patchify(images, 8) @ weight.T + proj.bias, expected, rtol=1e-4, atol=1e-4)


def test_sincos_positions_are_distinct() -> None:
    pos = sincos_2d(4, 4, 32)
    assert pos.shape == (16, 32) and torch.cdist(pos, pos).add(torch.eye(16)).min() > 0.1


def test_mae_loss_falls() -> None:
    model = tiny_model()
    objective = MAEObjective(model, mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2).train()
    ramp = torch.linspace(0, 1, 32)
    images = torch.stack([ramp.view(1, 32, 1) * ramp.view(1, 1, 32) * (0.5 + 0.5 * torch.rand(1, 1, 1))
                          for _ in range(16)])
    params = [p for m in (model, objective) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(15):
        terms = objective(model, {"image": (images - 0.5) / 0.25})
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_mae_loss_is_the_papers_normalised_pixel_loss_on_removed_patches() -> None:
    """He et al. 2022 (``forward_loss``, norm_pix_loss): each patch's target normalised by its mean and unbiased
    variance + 1e-6, the squared error averaged over a patch's pixels, then over the removed patches only."""
    model = tiny_model().eval()
    objective = MAEObjective(model, decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    predictions: list[torch.Tensor] = []
    objective.decoder_pred.register_forward_hook(lambda _module, _inputs, out: predictions.append(out))
    images = torch.randn(3, 1, 32, 32)
    torch.manual_seed(1)
    with torch.no_grad():
        loss = objective(model, {"image": images})["loss"]
    torch.manual_seed(1)
    order = torch.rand(3, 16).argsort(1)  # the objective's draw: 16 patches of 8 px, 4 (25%) kept
    removed = torch.ones(3, 16).scatter_(1, order[:, :4], 0.0)
    target = patchify(images, 8)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    expected = (((predictions[0] - target) ** 2).mean(-1) * removed).sum() / removed.sum()
    assert abs(float(loss) - float(expected)) < 1e-6
