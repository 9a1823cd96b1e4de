"""timm image towers: pooled embedding + tokens for every registered shape; one-channel stems summed from RGB."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from radlab.models.image_towers import IMAGE_TOWERS, TimmImageTower

TIMM_TOWERS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_tiny_patch14",
               "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "resnet18", "resnet50", "convnext_tiny"]
SHALLOW = {"vit_tiny_patch16_224": {"depth": 2}, "vit_tiny_patch14": {"depth": 2}, "vit_small_patch16_224": {"depth": 1}, "vit_base_patch16_224": {"depth": 1},
           "vit_small_patch14_dinov2": {"depth": 1}, "vit_base_patch14_dinov2": {"depth": 1},
           "resnet50": {"layers": [1, 1, 1, 1]}, "convnext_tiny": {"depths": (1, 1, 1, 1)}}


@pytest.mark.parametrize("name", TIMM_TOWERS)
def test_tower_returns_pooled_and_tokens(name: str) -> None:
    """Every shape at its real width (one block per stage for the larger ones, to keep the test fast)."""
    size = 56 if "patch14" in name else 64
    tower = IMAGE_TOWERS.build(name, image_size=size, **SHALLOW.get(name, {})).eval()
    with torch.no_grad():
        out = tower(torch.randn(2, 1, size, size))
    n_tokens = out.grid[0] * out.grid[1]
    assert out.pooled.shape == (2, tower.embed_dim)
    assert out.tokens.shape == (2, n_tokens, tower.embed_dim)
    expected = (4, 4) if "patch" in name else (2, 2)
    assert out.grid == expected
    assert torch.isfinite(out.pooled).all()


def _rgb_checkpoint(tmp_path: Path, timm_name: str, **kwargs: object) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    rgb = timm.create_model(timm_name, pretrained=False, **kwargs).eval()
    path = tmp_path / f"{timm_name}.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    return path, rgb


@pytest.mark.parametrize(("name", "stem"), [("resnet18", "conv1.weight"),
                                            ("vit_tiny_patch16_224", "patch_embed.proj.weight")])
def test_one_channel_stem_sums_pretrained_rgb_weights(tmp_path: Path, name: str, stem: str) -> None:
    """A local pretrained RGB checkpoint gives a 1-channel stem equal to the sum over RGB, so a gray image gives
    exactly what the RGB network gives on that image copied to 3 channels, at a third of the stem's input."""
    kwargs = {"img_size": 64, "depth": 2} if name.startswith("vit") else {}
    path, rgb = _rgb_checkpoint(tmp_path, name, **kwargs)
    depth = {"depth": 2} if name.startswith("vit") else {}
    tower = IMAGE_TOWERS.build(name, image_size=64, checkpoint_path=str(path), **depth).eval()
    weights = dict(tower.backbone.named_parameters())[stem]
    assert weights.shape[1] == 1
    torch.testing.assert_close(weights, rgb.state_dict()[stem].sum(dim=1, keepdim=True))
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ours = tower(gray).pooled
        theirs = rgb.forward_head(rgb.forward_features(gray.expand(-1, 3, -1, -1)), pre_logits=True)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("file_depth", [1, 3])
def test_a_checkpoint_of_another_depth_is_refused_not_half_loaded(tmp_path: Path, file_depth: int) -> None:
    path, _ = _rgb_checkpoint(tmp_path, "vit_tiny_patch16_224", img_size=64, depth=file_depth)
    with pytest.raises(ValueError, match="another architecture or size") as caught:
        IMAGE_TOWERS.build("vit_tiny_patch16_224", image_size=64, checkpoint_path=str(path), depth=2)
    assert str(path) in str(caught.value) and ("blocks.1." if file_depth == 1 else "blocks.2.") in str(caught.value)


def test_tower_interface() -> None:
    tower = TimmImageTower("resnet18", image_size=32)
    assert tower.embed_dim == 512 and tower.num_prefix_tokens == 0
    patch14 = IMAGE_TOWERS.build("vit_tiny_patch14", image_size=56, depth=1)
    assert patch14.backbone.patch_embed.proj.kernel_size == (14, 14)


def test_regions_stage_gives_a_cnns_earlier_cells_and_keeps_its_embedding() -> None:
    """ResNet-18 with ``regions_stage: -2``: regions are ``layer3``'s cells (stride 16, 256 wide), pooled and
    tokens the same as without the option; a ViT, which has no stages, refuses it."""
    tower = IMAGE_TOWERS.build("resnet18", image_size=64, regions_stage=-2).eval()
    plain = IMAGE_TOWERS.build("resnet18", image_size=64).eval()
    plain.load_state_dict(tower.state_dict())
    images = torch.randn(2, 1, 64, 64)
    out, reference = tower(images), plain(images)
    m = tower.backbone
    with torch.no_grad():
        layer3 = m.layer3(m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(images)))))))
    assert tower.region_dim == 256 and out.regions.shape == (2, 16, 256)
    assert torch.allclose(out.regions, layer3.flatten(2).transpose(1, 2), atol=1e-6)
    assert torch.equal(out.pooled, reference.pooled) and torch.equal(out.tokens, reference.tokens)
    assert reference.regions is None and plain.region_dim == plain.embed_dim
    with pytest.raises(ValueError, match="not a feature stage of vit_tiny_patch16_224"):
        IMAGE_TOWERS.build("vit_tiny_patch16_224", image_size=64, regions_stage=-2)
