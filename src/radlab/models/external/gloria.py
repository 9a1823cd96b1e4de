"""GLoRIA (Huang et al. 2021) from its PyTorch Lightning checkpoint (e.g. ``chexpert_resnet50.ckpt``).

The checkpoint's ``state_dict`` holds ``gloria.img_encoder.model.*`` (torchvision ResNet-50 with ``fc``
removed), ``gloria.img_encoder.global_embedder.*`` (Linear 2048->768), ``gloria.img_encoder.local_embedder.weight``
(1x1 conv on layer3) and ``gloria.text_encoder.model.*`` (a BERT: Bio_ClinicalBERT). All are loaded strictly.
``hyper_parameters`` (an OmegaConf config, read as inert data) gives ``bert_type``, ``last_n_layers``,
``aggregate_method`` and ``word_num`` when present; the released CheXpert defaults otherwise.

Text needs Bio_ClinicalBERT's tokenizer (and optionally its config): from ``DIR/text/`` beside the checkpoint,
else the ``bert_type`` hub id (works offline only when cached); without one the encoder is image-only.

Behaviour reproduced from GLoRIA: images are resized on the longer side and zero-padded to 256 px, centre-cropped
to 224 px (``build_transformation``), 3 identical channels normalised with mean 0.5 / std 0.5, upsampled
to 299 px inside the encoder; the global image embedding is ``global_embedder`` on the pooled 2048-d
features; a report is lower-cased and reduced to its words, tokenised padded to ``word_num`` (97), and its
sentence embedding is the sum over the last 4 BERT layers of the token embeddings from [CLS] to [SEP],
divided by ``word_num`` (GLoRIA's mean over all padded positions of its word-aggregated embeddings, which is
the same number). There is no text projection (identity). The local branch is kept as the encoder's
``local_match``: ``local_embedder`` (a 1x1 convolution, i.e. a linear map of each ``layer3`` cell) on the
``layer3`` regions, words from the same last-4-layer token features with their pieces summed (GLoRIA's
``aggregate_tokens``), τ1/τ2 from ``model.gloria.temp1/temp2`` (4 and 5 by default); zero-shot and retrieval use
it with ``similarity: local|both``. GLoRIA's own evaluation counts a report's word pieces as its words
(``cap_lens``) and so also scores [SEP] and padding positions when a word splits into pieces; radlab scores the
words only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from radlab.models import ENCODERS
from radlab.models.checkpoint import strip_prefix
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import (
    ChannelAdapter,
    Placeholder,
    bert_from_state_dict,
    config_dir,
    feature_map_output,
    find_file,
    load_tokenizer,
    safe_load,
    state_dict_of,
    text_dir,
)
from radlab.models.local_matching import LocalMatcher
from radlab.models.towers import TowerOutput

log = logging.getLogger(__name__)
DEFAULTS = {"model.text.bert_type": "emilyalsentzer/Bio_ClinicalBERT", "model.text.last_n_layers": 4,
            "model.text.aggregate_method": "sum", "data.text.word_num": 97, "model.gloria.temp1": 4.0,
            "model.gloria.temp2": 5.0}
GLORIA_SIZE, GLORIA_RESIZE, GLORIA_INNER_SIZE = 224, 256, 299


def config_value(config: Any, dotted: str) -> Any:
    """A value from a config read as data: plain dicts or OmegaConf containers as ``Placeholder`` objects."""
    node = config
    for part in dotted.split("."):
        if isinstance(node, Placeholder):
            state = node.__dict__.get("state") or {}
            node = state.get("_content", state)
        if not isinstance(node, dict) or part not in node:
            return DEFAULTS.get(dotted)
        node = node[part]
    if isinstance(node, Placeholder):
        node = (node.__dict__.get("state") or {}).get("_val", DEFAULTS.get(dotted))
    return node


class GloriaImageTower(nn.Module):
    """GLoRIA's ``ImageEncoder.resnet_forward``: upsample to 299 px, ResNet to layer4, average pool; the
    ``layer3`` cells are the regions its local embedder reads."""

    def __init__(self, trunk: ResNet, adapter: ChannelAdapter) -> None:
        super().__init__()
        self.model, self.adapter = trunk, adapter
        self.embed_dim: int = trunk.layer4[-1].conv1.in_channels

    def forward(self, images: torch.Tensor) -> TowerOutput:
        x = F.interpolate(self.adapter(images), size=(GLORIA_INNER_SIZE, GLORIA_INNER_SIZE), mode="bilinear",
                          align_corners=True)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        regions = m.layer3(m.layer2(m.layer1(x)))
        features = m.layer4(regions)
        out = feature_map_output(features, features.mean(dim=(2, 3)))
        out.regions = regions.flatten(2).transpose(1, 2)
        return out


class GloriaTextTower(nn.Module):
    """GLoRIA's ``BertEncoder`` sentence embedding (see the module docstring)."""

    def __init__(self, bert: nn.Module, tokenizer: Any, last_n_layers: int = 4, aggregate: str = "sum",
                 word_num: int = 97) -> None:
        super().__init__()
        if aggregate not in ("sum", "mean"):
            raise ValueError(f"aggregate_method must be 'sum' or 'mean', got {aggregate!r}")
        self.model, self.tokenizer = bert, tokenizer
        self.last_n_layers, self.aggregate, self.word_num = last_n_layers, aggregate, word_num
        self.embed_dim: int = bert.config.hidden_size

    @staticmethod
    def clean(text: str) -> str:
        """GLoRIA's report cleaning: split on numbered points and full stops, keep lower-cased ASCII words,
        drop one-word fragments."""
        sentences = [s for point in re.split(r"[0-9]+\.", text.replace("\n", " ")) for s in point.split(".")]
        kept = []
        for sentence in sentences:
            words = re.findall(r"\w+", sentence.replace("\ufffd\ufffd", " ").lower())
            words = [w.encode("ascii", "ignore").decode("ascii") for w in words]
            if len(words) > 1:
                kept.append(" ".join(w for w in words if w))
        return " ".join(kept)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer([self.clean(t) for t in texts], padding="max_length", truncation=True,
                             max_length=self.word_num, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        layers = torch.stack(out.hidden_states[-self.last_n_layers:], dim=1)
        words = layers.sum(1) if self.aggregate == "sum" else layers.mean(1)
        mask = attention_mask.bool()
        pooled = (words * mask.unsqueeze(-1)).sum(1) / input_ids.shape[1]
        return TowerOutput(pooled, words, mask)


class GloriaImageEncoder(nn.Module):
    """GLoRIA's ``ImageEncoder`` key layout (``model``, ``global_embedder``, ``local_embedder``), built from
    the checkpoint's shapes so that it loads strictly."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        trunk = strip_prefix(state, "model.")
        layers = [len({k.split(".")[1] for k in trunk if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
        self.model = ResNet(Bottleneck if "layer1.0.conv3.weight" in trunk else BasicBlock, layers)
        self.model.fc = nn.Identity()
        self.global_embedder = nn.Linear(*state["global_embedder.weight"].shape[::-1])
        local = state["local_embedder.weight"]
        self.local_embedder = nn.Conv2d(local.shape[1], local.shape[0], kernel_size=1, bias=False)


def load_gloria(path: str) -> RadEncoder:
    file = find_file(Path(path).expanduser(), (), ("*.ckpt", "*.pt", "*.pth"))
    checkpoint = safe_load(file)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    state = state_dict_of(checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint)
    state = {k.removeprefix("gloria."): v for k, v in state.items()}
    other = sorted(k for k in state if not k.startswith(("img_encoder.", "text_encoder.model.")))
    if other:
        raise ValueError(f"{file}: unexpected keys for GLoRIA: {other[:5]}")
    image_state = strip_prefix(state, "img_encoder.")
    image = GloriaImageEncoder(image_state)
    image.load_state_dict(image_state, strict=True)
    adapter = ChannelAdapter([0.5] * 3, [0.5] * 3)
    tower = GloriaImageTower(image.model, adapter)
    text = _text_tower(file.parent, strip_prefix(state, "text_encoder.model."), hparams)
    model = RadEncoder(tower, text, image.global_embedder.out_features,
                       adapter.preprocess(GLORIA_SIZE, "pad", GLORIA_RESIZE), image_proj=image.global_embedder,
                       text_proj=nn.Identity() if text is not None else None)
    if text is not None:
        conv = image.local_embedder.weight
        temps = [float(config_value(hparams, f"model.gloria.{t}")) for t in ("temp1", "temp2")]
        model.local_match = LocalMatcher(conv.shape[1], conv.shape[0], *temps)
        model.local_match.embedder.weight.data.copy_(conv.detach().flatten(1))
    return model.eval()


def _text_tower(root: Path, state: dict[str, torch.Tensor], hparams: Any) -> GloriaTextTower | None:
    local = text_dir(root)
    tokenizer = load_tokenizer([local, config_value(hparams, "model.text.bert_type")])
    bert = bert_from_state_dict(state, config_dir(local))
    if tokenizer is None:
        log.warning("GLoRIA: no tokenizer found (put Bio_ClinicalBERT in %s/text); loading the image encoder only",
                    root)
        return None
    return GloriaTextTower(bert, tokenizer, int(config_value(hparams, "model.text.last_n_layers")),
                           str(config_value(hparams, "model.text.aggregate_method")),
                           int(config_value(hparams, "data.text.word_num")))


ENCODERS.register("gloria", "GLoRIA Lightning checkpoint (.ckpt); Bio_ClinicalBERT tokenizer in DIR/text")(
    load_gloria)
