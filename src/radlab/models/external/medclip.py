"""MedCLIP (Wang et al. 2022) from its ``pytorch_model.bin`` (the released ``medclip-vit`` / ``medclip-resnet``
folders).

Keys: ``vision_model.model.*`` (a Hugging Face Swin-T, or a torchvision ResNet-50 whose ``fc`` is the
2048->512 projection), ``vision_model.projection_head.weight`` (Swin only, 768->512), ``text_model.model.*``
(Bio_ClinicalBERT), ``text_model.projection_head.*`` (768->512) and ``logit_scale``. Swin and BERT
architectures are read from the tensor shapes (older transformers key names are converted as
``from_pretrained`` does); every key is consumed and checked.

Text needs Bio_ClinicalBERT's tokenizer: from ``DIR/text/`` (its ``config.json`` is used too when present),
else the ``emilyalsentzer/Bio_ClinicalBERT`` hub id (offline only when cached); without one the encoder is
image-only.

Behaviour: images are one channel normalised with mean 0.5863 / std 0.2795 (MedCLIP's constants) copied to
3 channels, 224 px. Image features are Swin's ``pooler_output`` (768-d) or the ResNet's pooled 2048-d vector,
before the projection. The text embedding averages BERT hidden states 1, 2 and the last one, and averages
tokens; MedCLIP averaged every padded position of its batch, radlab averages the real tokens only, which is
the same for a text encoded on its own and does not depend on the batch.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from transformers import SwinConfig

from radlab.models import ENCODERS
from radlab.models.checkpoint import strip_prefix
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import (
    ChannelAdapter,
    bert_from_state_dict,
    config_dir,
    feature_map_output,
    find_file,
    hf_model_from_state_dict,
    load_state_dict_file,
    load_tokenizer,
    text_dir,
)
from radlab.models.text_towers import pad_length
from radlab.models.towers import TowerOutput

log = logging.getLogger(__name__)
MEDCLIP_MEAN, MEDCLIP_STD, MEDCLIP_SIZE = 0.5862785803043838, 0.27950088968644304, 224
BERT_TYPE = "emilyalsentzer/Bio_ClinicalBERT"


def swin_config_from_state_dict(state: dict[str, torch.Tensor], image_size: int = MEDCLIP_SIZE) -> SwinConfig:
    """A SwinConfig from the tensor shapes of a (Hugging Face) Swin state dict."""
    patch = state["embeddings.patch_embeddings.projection.weight"]
    blocks: dict[int, set[int]] = {}
    heads: dict[int, int] = {}
    window = 7
    for key, value in state.items():
        match = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
            if key.endswith("relative_position_bias_table"):
                heads[int(match.group(1))] = value.shape[1]
                window = (round(value.shape[0] ** 0.5) + 1) // 2
    fc1_key = re.compile(r"encoder\.layers\.0\.blocks\.0\.(intermediate\.dense|mlp\.fc1)\.weight")
    fc1 = next(v for k, v in state.items() if fc1_key.match(k))
    layers = sorted(blocks)
    return SwinConfig(image_size=image_size, patch_size=patch.shape[-1], num_channels=patch.shape[1],
                      embed_dim=patch.shape[0], depths=[len(blocks[i]) for i in layers],
                      num_heads=[heads[i] for i in layers], window_size=window,
                      mlp_ratio=fc1.shape[0] / patch.shape[0],
                      use_absolute_embeddings="embeddings.position_embeddings" in state,
                      qkv_bias=any(k.endswith(("query.bias", "q_proj.bias")) for k in state))


class SwinTower(nn.Module):
    """MedCLIP-ViT's vision trunk: pooled = Swin ``pooler_output``, tokens = last hidden state."""

    def __init__(self, model: nn.Module, adapter: ChannelAdapter) -> None:
        super().__init__()
        self.model, self.adapter = model, adapter
        self.embed_dim: int = model.config.hidden_size

    def forward(self, images: torch.Tensor) -> TowerOutput:
        out = self.model(pixel_values=self.adapter(images))
        tokens = out.last_hidden_state
        side = int(round(tokens.shape[1] ** 0.5))
        return TowerOutput(out.pooler_output, tokens, grid=(side, tokens.shape[1] // max(side, 1)))


class ResNetTower(nn.Module):
    """MedCLIP-ResNet's vision trunk (torchvision ResNet-50 without its ``fc`` projection)."""

    def __init__(self, model: ResNet, adapter: ChannelAdapter, embed_dim: int) -> None:
        super().__init__()
        self.model, self.adapter = model, adapter
        self.embed_dim = embed_dim

    def forward(self, images: torch.Tensor) -> TowerOutput:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(self.adapter(images)))))
        features = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return feature_map_output(features, features.mean(dim=(2, 3)))


class MedClipTextTower(nn.Module):
    """MedCLIP's text pooling: mean of hidden states 1, 2 and last, then a mean over real tokens."""

    def __init__(self, bert: nn.Module, tokenizer: Any, max_length: int = 77) -> None:
        super().__init__()
        self.model, self.tokenizer, self.max_length = bert, tokenizer, max_length
        self.embed_dim: int = bert.config.hidden_size

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
        return pad_length(tokens, self.tokenizer.pad_token_id, self.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        tokens = torch.stack([hidden[1], hidden[2], hidden[-1]], dim=1).mean(1)
        mask = attention_mask.bool()
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TowerOutput(pooled, tokens, mask)


def _linear(state: dict[str, torch.Tensor], prefix: str) -> nn.Linear:
    weight = state.pop(f"{prefix}.weight")
    bias = state.pop(f"{prefix}.bias", None)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})}, strict=True)
    return layer


def _vision(state: dict[str, torch.Tensor], adapter: ChannelAdapter) -> tuple[nn.Module, nn.Module]:
    """(tower, image projection); consumes the ``vision_model.*`` keys of ``state``."""
    vision = strip_prefix(state, "vision_model.")
    for key in [k for k in state if k.startswith("vision_model.")]:
        del state[key]
    if "projection_head.weight" in vision:
        proj = _linear(vision, "projection_head")
        swin = hf_model_from_state_dict(swin_config_from_state_dict(strip_prefix(vision, "model.")),
                                        strip_prefix(vision, "model."))
        rest = [k for k in vision if not k.startswith("model.")]
        if rest:
            raise ValueError(f"unexpected MedCLIP vision keys {rest[:5]}")
        return SwinTower(swin, adapter), proj
    trunk = strip_prefix(vision, "model.")
    layers = [len({k.split(".")[1] for k in trunk if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    resnet = ResNet(Bottleneck, layers)
    resnet.fc = nn.Linear(trunk["fc.weight"].shape[1], trunk["fc.weight"].shape[0], bias="fc.bias" in trunk)
    resnet.load_state_dict(trunk, strict=True)
    if len(trunk) != len(vision):
        raise ValueError("unexpected MedCLIP vision keys")
    proj, resnet.fc = resnet.fc, nn.Identity()
    return ResNetTower(resnet, adapter, proj.in_features), proj


def load_medclip(path: str) -> RadEncoder:
    root = Path(path).expanduser()
    file = find_file(root, ("pytorch_model.bin", "model.safetensors"), ("*.bin", "*.pt", "*.pth"))
    state = dict(load_state_dict_file(file, "state_dict", "model"))
    adapter = ChannelAdapter([MEDCLIP_MEAN] * 3, [MEDCLIP_STD] * 3)
    tower, image_proj = _vision(state, adapter)
    text_state = strip_prefix(state, "text_model.")
    text_proj = _linear(text_state, "projection_head")
    log_scale = state.pop("logit_scale", None)
    leftover = [k for k in state if not k.startswith("text_model.")]
    if leftover or any(not k.startswith("model.") for k in text_state):
        raise ValueError(f"{file}: unexpected MedCLIP keys {leftover[:5]}")
    local = text_dir(file.parent, ("text", "Bio_ClinicalBERT"))
    bert = bert_from_state_dict(strip_prefix(text_state, "model."), config_dir(local))
    tokenizer = load_tokenizer([local, BERT_TYPE])
    text = MedClipTextTower(bert, tokenizer) if tokenizer is not None else None
    if text is None:
        log.warning("MedCLIP: no tokenizer found (put Bio_ClinicalBERT in %s/text); image encoder only", file.parent)
    encoder = RadEncoder(tower, text, image_proj.out_features, adapter.preprocess(MEDCLIP_SIZE), image_proj=image_proj,
                         text_proj=text_proj if text is not None else None)
    if log_scale is not None:  # MedCLIP keeps the log of its inverse temperature, as CLIP does
        encoder.pretrained_logit_scale = float(log_scale.float().exp())
    return encoder.eval()


ENCODERS.register("medclip", "MedCLIP pytorch_model.bin (Swin or ResNet); Bio_ClinicalBERT tokenizer in DIR/text")(
    load_medclip)
