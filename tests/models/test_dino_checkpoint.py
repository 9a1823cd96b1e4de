"""Continued DINOv2 pre-training from a Hugging Face Dinov2 folder (RAD-DINO layout) with its DINO heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

from radlab.models import load_encoder
from radlab.models.dino_checkpoint import HEAD_FILE, head_shape, load_head_state, save_head_state
from radlab.models.vit_masking import masked_forward
from radlab.objectives.dinov2 import DINOHead, DINOv2Objective

SIZE, PATCH, DIM = 28, 14, 32


def official_head_state(prefix: str, in_dim: int, k: int, hidden: int = 24, bottleneck: int = 16) -> dict:
    """Head tensors named as in DINOv2 training checkpoints (``teacher.dino_head.mlp.0.weight`` ...)."""
    g = torch.Generator().manual_seed(len(prefix))
    shapes = {"mlp.0.weight": (hidden, in_dim), "mlp.0.bias": (hidden,), "mlp.2.weight": (hidden, hidden),
              "mlp.2.bias": (hidden,), "mlp.4.weight": (bottleneck, hidden), "mlp.4.bias": (bottleneck,),
              "last_layer.weight_g": (k, 1), "last_layer.weight_v": (k, bottleneck)}
    return {f"{prefix}{key}": torch.randn(*shape, generator=g) for key, shape in shapes.items()}


@pytest.fixture(scope="module")
def rad_dino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Dinov2 saved like microsoft/rad-dino, plus a head file with teacher and student heads."""
    root = tmp_path_factory.mktemp("rad-dino")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=SIZE, patch_size=PATCH)
    Dinov2Model(config).eval().save_pretrained(root)
    heads = {**official_head_state("teacher.dino_head.", DIM, 40), **official_head_state("teacher.ibot_head.", DIM, 24),
             **official_head_state("student.dino_head.", DIM, 40)}
    save_file(heads, str(root / HEAD_FILE))
    return root


def test_head_state_strips_prefixes_and_infers_shapes(rad_dino_dir: Path) -> None:
    heads = load_head_state(rad_dino_dir)
    assert set(heads) == {"dino_head", "ibot_head"}
    assert head_shape(heads["dino_head"]) == {"in_dim": DIM, "hidden_dim": 24, "bottleneck_dim": 16,
                                              "n_prototypes": 40, "n_layers": 3}
    expected = official_head_state("teacher.dino_head.", DIM, 40)["teacher.dino_head.mlp.0.weight"]
    torch.testing.assert_close(heads["dino_head"]["mlp.0.weight"], expected)


def test_round_trip_and_plain_last_layer(tmp_path: Path) -> None:
    head = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    save_head_state(tmp_path, {"dino_head": head})
    loaded = load_head_state(tmp_path)["dino_head"]
    assert head_shape(loaded) == {"in_dim": 12, "hidden_dim": 8, "bottleneck_dim": 6, "n_prototypes": 10,
                                  "n_layers": 2}
    plain = {f"dino_head.{k}": v for k, v in loaded.items() if not k.startswith("last_layer")}
    plain["dino_head.last_layer.weight"] = torch.randn(10, 6)
    save_file(plain, str(tmp_path / "plain.safetensors"))
    state = load_head_state(tmp_path / "plain.safetensors")["dino_head"]
    rebuilt = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    rebuilt.load_state_dict(state)
    x = torch.randn(3, 6)
    torch.testing.assert_close(rebuilt.last_layer(x), x @ plain["dino_head.last_layer.weight"].T)


def test_parametrized_weight_norm_names_load(tmp_path: Path) -> None:
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 10, bias=False))
    layer.parametrizations.weight.original0.data.uniform_(0.5, 2.0)
    head = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    flat = {f"student.dino_head.{k}": v for k, v in head.state_dict().items() if not k.startswith("last_layer")}
    flat.update({f"student.dino_head.last_layer.{k}": v.detach() for k, v in layer.state_dict().items()})
    assert "student.dino_head.last_layer.parametrizations.weight.original1" in flat
    save_file(flat, str(tmp_path / HEAD_FILE))
    rebuilt = DINOHead(12, 10, hidden_dim=8, bottleneck_dim=6, n_layers=2)
    rebuilt.load_state_dict(load_head_state(tmp_path)["dino_head"])
    x = torch.randn(3, 6)
    torch.testing.assert_close(rebuilt.last_layer(x), layer(x).detach())


def test_continued_pretraining_loads_backbone_and_heads(rad_dino_dir: Path) -> None:
    model = load_encoder(f"rad-dino:{rad_dino_dir}")
    objective = DINOv2Objective(model, init_heads=str(rad_dino_dir), n_local=1, local_size=PATCH * 1).train()
    heads = load_head_state(rad_dino_dir)
    torch.testing.assert_close(objective.heads["dino_head"].mlp[0].weight, heads["dino_head"]["mlp.0.weight"])
    torch.testing.assert_close(objective.teacher["ibot_head"].last_layer.weight_v,
                               heads["ibot_head"]["last_layer.weight_v"])
    assert objective.mask_token is None
    images = torch.randn(2, 3, SIZE, SIZE)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 1] = True
    with torch.no_grad():
        plain, _ = masked_forward(model.image_tower, images)
        masked, _ = masked_forward(model.image_tower, images, mask)
    torch.testing.assert_close(plain, model.image_features(images))
    assert not torch.allclose(masked[0], plain[0]) and torch.allclose(masked[1], plain[1], atol=1e-6)
    batch = {"image": [torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, PATCH, PATCH)]}
    terms = objective(model, batch)
    terms["loss"].backward()
    assert model.image_tower.model.embeddings.mask_token.grad is not None or "ibot" not in terms
    with torch.no_grad():
        for p in model.image_tower.parameters():
            p.add_(0.5)
    objective.after_step(model, 1, 10)
    first_t = next(objective.teacher["image_tower"].parameters())
    first_s = next(model.image_tower.parameters())
    torch.testing.assert_close(first_t, 0.992 * (first_s - 0.5) + 0.008 * first_s)
