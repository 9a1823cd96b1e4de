"""Hugging Face vision transformers (RAD-DINO, any Dinov2 / Dinov2-with-registers / ViT model) via
``transformers.AutoModel``, with the preprocessing their ``preprocessor_config.json`` declares.

RAD-DINO's processor resizes the shortest edge to 518 px and centre-crops 518 px, then normalises with
mean 0.5307 / std 0.2583 on each (identical) RGB channel; radlab reads that geometry from the config
(``Preprocess(fit="crop")``), so a non-square radiograph loses its edges as it does for RAD-DINO itself. A
grayscale image enters as three identical channels
(``Preprocess.channels = 3``, normalised with the channel-average mean/std); a ``ChannelAdapter`` then applies
the model's exact per-channel statistics, so models with ImageNet RGB statistics are handled exactly too.

Pooled features are the final-layer-normalised class token (``pooler_output`` for Dinov2, the class token
of ``last_hidden_state`` for ViT); tokens are the patch tokens after the class and register tokens.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.image_processing_utils import ImageProcessingMixin

from radlab.models import ENCODERS
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import ChannelAdapter
from radlab.models.image_towers import IMAGE_TOWERS
from radlab.models.towers import Preprocess, TowerOutput

RAD_DINO_HUB_ID = "microsoft/rad-dino"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Parameters the tower never reads (it takes last_hidden_state): a classification checkpoint ships no pooler.
UNREAD_PREFIXES = ("pooler.",)


class ProcessorSettings(NamedTuple):
    """What a preprocessor config asks for, in radlab's terms (``Preprocess``)."""

    image_size: int
    fit: str
    resize: int | None
    mean: list[float]
    std: list[float]


def processor_settings(path: str, config_image_size: int | None = None) -> ProcessorSettings:
    """Input geometry and per-channel statistics from a preprocessor config: a shortest-edge resize with a
    centre crop becomes ``fit="crop"``; a fixed-size resize (which stretches) is read as padding, which keeps
    the radiograph's proportions. The model's own image size and ImageNet statistics when there is none."""
    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(path)
    except (OSError, ValueError):
        cfg = {}
    crop = _side(cfg.get("crop_size")) if cfg.get("do_center_crop", bool(cfg.get("crop_size"))) else None
    resize = _side(cfg.get("size"))
    shortest = isinstance(cfg.get("size"), dict) and "shortest_edge" in cfg["size"]
    size = crop or resize or config_image_size or 224
    fit = "crop" if shortest else "pad"
    resize = resize if shortest and resize is not None and resize > size else None
    if not cfg.get("do_normalize", True):
        return ProcessorSettings(size, fit, resize, [0.0] * 3, [1.0] * 3)
    mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    mean = [float(mean)] * 3 if isinstance(mean, int | float) else [float(m) for m in mean]
    std = [float(std)] * 3 if isinstance(std, int | float) else [float(s) for s in std]
    return ProcessorSettings(size, fit, resize, mean, std)


def _side(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    for key in ("shortest_edge", "height", "width"):
        if key in value:
            return int(value[key])
    return None


class HFVisionTower(nn.Module):
    """A transformers ViT-family backbone on radlab input; pooled = class token, tokens = patch tokens."""

    def __init__(self, model: nn.Module, adapter: ChannelAdapter) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter
        config = model.config
        self.embed_dim: int = config.hidden_size
        self.patch_size: int = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def forward(self, images: torch.Tensor) -> TowerOutput:
        x = self.adapter(images)
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        hidden = self.model(pixel_values=x, **kwargs).last_hidden_state
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return TowerOutput(hidden[:, 0], hidden[:, self.num_prefix_tokens:], grid=grid)

    def save_pretrained(self, directory: str | Path, preprocess: Preprocess | None = None) -> None:
        """The backbone as a Hugging Face model folder, with a preprocessor config for its input statistics
        (and ``preprocess``'s geometry: ``save_architecture``)."""
        self.model.save_pretrained(directory)
        self.save_architecture(directory, preprocess)

    def save_architecture(self, directory: str | Path, preprocess: Preprocess | None = None) -> None:
        """What rebuilds this tower without weights (a radlab checkpoint holds them): the model's config.json
        and a preprocessor config with its per-channel statistics, in ``preprocess``'s geometry (the size an
        encoder trained at; "pad" as a resize of the already zero-padded square, which the processor cannot
        pad itself) or else the model's own (shortest edge to its image size, centre crop)."""
        directory = Path(directory)
        self.model.config.save_pretrained(directory)
        size = preprocess.image_size if preprocess else int(getattr(self.model.config, "image_size", 224))
        side = (preprocess.resize if preprocess else None) or size
        padded = preprocess is not None and preprocess.fit == "pad"
        (directory / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "BitImageProcessor", "do_resize": True,
            "size": {"height": side, "width": side} if padded else {"shortest_edge": side},
            "do_center_crop": not padded or side != size, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": self.adapter.mean,
            "image_std": self.adapter.std, "do_convert_rgb": True, "resample": 2}, indent=2))


def build_hf_vision(path: str, input_mean: float | None = None,
                    input_std: float | None = None) -> tuple[HFVisionTower, Preprocess]:
    """The tower and its Preprocess from a local folder (or a hub id, for users with internet); a folder with
    a config but no weights (``save_architecture``) builds the architecture with random weights."""
    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder)).float().eval()
    else:
        model, info = AutoModel.from_pretrained(path, output_loading_info=True)
        missing = {k for k in info.get("missing_keys") or () if not k.startswith(UNREAD_PREFIXES)}
        problems = {k: v for k, v in (("missing_keys", missing), ("mismatched_keys", info.get("mismatched_keys")))
                    if v}
        if problems:  # transformers would start those tensors at random, with a log line only
            raise ValueError(f"{path}: the weights do not fit the model's config: {problems}")
        model = model.float().eval()
    settings = processor_settings(path, getattr(model.config, "image_size", None))
    adapter = ChannelAdapter(settings.mean, settings.std, input_mean, input_std)
    return HFVisionTower(model, adapter), adapter.preprocess(settings.image_size, settings.fit, settings.resize)


def load_hf_vision(path: str) -> RadEncoder:
    """An image-only encoder: ``encode_image`` is the normalised class token (no projection)."""
    tower, preprocess = build_hf_vision(_resolve(path, None))
    return RadEncoder(tower, None, tower.embed_dim, preprocess, image_proj=nn.Identity()).eval()


def load_rad_dino(path: str) -> RadEncoder:
    """RAD-DINO from its Hugging Face folder (``microsoft/rad-dino`` from the hub when PATH is empty)."""
    return load_hf_vision(_resolve(path, RAD_DINO_HUB_ID))


def _resolve(path: str, default: str | None) -> str:
    if not path:
        if default is None:
            raise ValueError("give a model folder or hub id, e.g. hf-vision:/models/rad-dino")
        return default
    local = Path(path).expanduser()
    if local.exists():
        return str(local)
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"{path}: no such model folder (and not a hub id of the form org/name)")
    return path


@IMAGE_TOWERS.register("hf_vision", "a Hugging Face ViT/Dinov2 folder (kwargs: path; input_mean/input_std = the "
                                    "config's mean/std) to continue pre-training, e.g. RAD-DINO")
def hf_vision_tower(path: str, image_size: int | None = None, input_mean: float | None = None,
                    input_std: float | None = None) -> HFVisionTower:
    """``image_size`` is accepted for the registry's interface; ViT-family models interpolate positions."""
    return build_hf_vision(_resolve(path, None), input_mean, input_std)[0]


ENCODERS.register("rad-dino", "RAD-DINO (Dinov2) Hugging Face folder; 518 px, its mean/std")(load_rad_dino)
ENCODERS.register("hf-vision", "any Hugging Face Dinov2/ViT folder with its preprocessor_config.json")(load_hf_vision)
