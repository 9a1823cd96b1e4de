"""Image towers built with timm; each returns a pooled embedding and its patch tokens."""

from __future__ import annotations

import inspect
from typing import Any

import timm
import torch
from safetensors import safe_open
from torch import nn

from radlab.models.towers import TowerOutput
from radlab.registry import Registry

IMAGE_TOWERS: Registry = Registry("image tower")


class TimmImageTower(nn.Module):
    """A timm backbone on one-channel radiographs.

    ``timm.create_model(..., in_chans=1)`` sums a pretrained RGB stem over its input channels, which is the
    right adaptation for grayscale images (a replicated 3-channel image would waste compute for the same
    result). ViTs pool by their class token; CNNs by global average pooling of the last feature map.

    ``regions_stage`` (CNNs only) also returns an earlier stage's feature-map cells as ``regions``, the
    features word-region matching reads: -2 is ResNet ``layer3`` (stride 16), GLoRIA's local features, while
    the pooled embedding and tokens stay the last stage's.
    """

    def __init__(self, name: str, image_size: int = 128, pretrained: bool = False,
                 checkpoint_path: str | None = None, regions_stage: int | None = None,
                 **timm_kwargs: object) -> None:
        super().__init__()
        kwargs = dict(num_classes=0, in_chans=1, pretrained=pretrained, **timm_kwargs)
        if checkpoint_path:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": checkpoint_path})
        if _is_vit(name):
            kwargs["img_size"] = image_size
        self.name = name
        self.image_size = image_size
        self.backbone = timm.create_model(name, **kwargs)
        if checkpoint_path:
            check_loaded(self.backbone, checkpoint_path)
        self.embed_dim: int = self.backbone.num_features
        self.num_prefix_tokens: int = getattr(self.backbone, "num_prefix_tokens", 0)
        self.regions_stage = regions_stage
        self.region_dim: int = self.embed_dim
        if regions_stage is not None:
            stages = [] if _is_vit(name) else [info["num_chs"] for info in self.backbone.feature_info]
            if not -len(stages) <= regions_stage < len(stages):
                raise ValueError(f"regions_stage {regions_stage} is not a feature stage of {name} "
                                 f"({len(stages)} stages; ViT regions are its patch tokens)")
            self.region_dim = stages[regions_stage]

    def forward(self, images: torch.Tensor) -> TowerOutput:
        if self.regions_stage is None:
            features, regions = self.backbone.forward_features(images), None
        else:
            features, (stage,) = self.backbone.forward_intermediates(images, indices=[self.regions_stage])
            regions = stage.flatten(2).transpose(1, 2)
        pooled = self.backbone.forward_head(features, pre_logits=True)
        if features.ndim == 4:
            b, c, h, w = features.shape
            return TowerOutput(pooled, features.flatten(2).transpose(1, 2), grid=(h, w), regions=regions)
        patches = features[:, self.num_prefix_tokens:]
        side = int(round(patches.shape[1] ** 0.5))
        return TowerOutput(pooled, patches, grid=(side, patches.shape[1] // max(side, 1)))


INITIAL_WEIGHTS = ("pretrained", "checkpoint_path")  # tower options that only choose the starting weights
CLASSIFIER_KEYS = ("head.", "fc.", "classifier.")  # a classification head the tower (num_classes=0) drops


def file_keys(path: str) -> set[str]:
    """The tensor names a weights file holds (safetensors, or a torch file read with weights_only)."""
    if path.endswith(".safetensors"):
        with safe_open(path, "pt") as handle:
            return set(handle.keys())
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module.") for k in state}


def check_loaded(backbone: nn.Module, path: str) -> None:
    """timm loads a ``checkpoint_path`` leniently once the classifier is dropped: a file of another depth or
    width would leave part of the tower at random init. Refuse it, naming what is missing or left over."""
    have, want = file_keys(path), set(backbone.state_dict())
    missing = sorted(k for k in want - have if not k.endswith("num_batches_tracked"))  # a counter, not a weight
    spare = sorted(k for k in have - want if not k.startswith(CLASSIFIER_KEYS))
    if missing or spare:
        problems = [f"no weights for {len(missing)} of the tower's {len(want)} tensors (first {missing[0]})"] \
            if missing else []
        problems += [f"{len(spare)} tensors the tower has no place for (first {spare[0]})"] if spare else []
        raise ValueError(f"{path}: {' and '.join(problems)}: a checkpoint of another architecture or size than "
                         f"{type(backbone).__name__} as configured (model.image_tower.kwargs)")


def _is_vit(name: str) -> bool:
    return name.startswith(("vit_", "deit", "eva", "vit"))


def _timm_entry(name: str, description: str, timm_name: str | None = None, **defaults: object) -> None:
    """Register ``name`` as a timm model (``timm_name``, default the same) with default keyword arguments."""

    def build(image_size: int = 128, pretrained: bool = False, checkpoint_path: str | None = None,
              **kwargs: object) -> TimmImageTower:
        return TimmImageTower(timm_name or name, image_size, pretrained, checkpoint_path, **{**defaults, **kwargs})

    IMAGE_TOWERS.register(name, description)(build)


for _name, _desc in [
    ("vit_tiny_patch16_224", "ViT-Tiny/16 (5.7M params), the CPU default at 128 px"),
    ("vit_small_patch16_224", "ViT-Small/16 (22M params)"),
    ("vit_base_patch16_224", "ViT-Base/16 (86M params)"),
    ("vit_small_patch14_dinov2", "ViT-Small/14, DINOv2 layout (layer scale), 22M params"),
    ("vit_base_patch14_dinov2", "ViT-Base/14, DINOv2 layout (layer scale), 86M params; RAD-DINO's shape"),
    ("resnet18", "ResNet-18 (11M params); tokens are the last feature map"),
    ("resnet50", "ResNet-50 (24M params); tokens are the last feature map"),
    ("convnext_tiny", "ConvNeXt-Tiny (28M params); tokens are the last feature map"),
]:
    _timm_entry(_name, _desc)
_timm_entry("vit_tiny_patch14", "ViT-Tiny with 14 px patches (timm vit_tiny_patch16_224, patch_size=14)",
            "vit_tiny_patch16_224", patch_size=14)


def takes_input_statistics(name: str) -> bool:
    """Whether a registered tower adapts its input to its model's own statistics (``input_mean``/``input_std``,
    as ``hf_vision``)."""
    return {"input_mean", "input_std"} <= set(inspect.signature(IMAGE_TOWERS.get(name)).parameters)


def build_image_tower(name: str, image_size: int, mean: float, std: float, **kwargs: Any) -> nn.Module:
    """A registered image tower for images normalised with ``mean``/``std``: a tower that adapts its input to
    its model's own statistics is told them unless ``kwargs`` already say; without them it would take the
    input as already in its model's statistics."""
    if takes_input_statistics(name):
        kwargs = {"input_mean": mean, "input_std": std, **kwargs}
    return IMAGE_TOWERS.build(name, image_size=image_size, **kwargs)
