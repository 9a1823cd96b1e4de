"""BioViL (Boecking et al. 2022): hi-ml-multimodal's image model and, when its folder is there, the
CXR-BERT-specialized text model, both projecting into BioViL's 128-d joint space. Reference: microsoft/hi-ml,
``hi-ml-multimodal/src/health_multimodal/image/model/model.py`` (``ImageModel``),
``.../text/model/modelling_cxrbert.py`` (``CXRBertModel``) and ``.../text/data/io.py`` (``TextInput``).

Image: ``biovil:PATH`` takes ``biovil_image_resnet50_proj_size_128.pt`` (or a folder holding a ``.pt``): a state
dict with keys ``encoder.encoder.*`` (the torchvision ResNet, including its unused ``fc``) and
``projector.model.{0,1,3}.*`` (conv 2048->128, batch norm, ReLU, conv 128->128). Every key is loaded strictly.

Text: the ``microsoft/BiomedVLP-CXR-BERT-specialized`` folder, looked for in ``DIR/text/``, ``DIR/cxr_bert/``, then
``DIR`` itself (the hub repository keeps the image ``.pt`` beside its own files), DIR being the image file's folder.
Its ``config.json`` (``model_type: cxr-bert``, ``projection_size``) is read as a plain ``BertConfig``; of its
weights (``model.safetensors`` or ``pytorch_model.bin``), ``bert.*`` loads strictly into a transformers
``BertModel``, ``cls_projection_head.*`` into ``CxrBertProjectionHead`` and the masked-LM head ``cls.predictions.*``
is unused. The tokenizer is a ``BertTokenizer`` on the folder's vocabulary. The folder's custom code
(``CXRBertModel``, ``CXRBertTokenizer``) is never run. Without the folder the encoder is image-only.

Preprocessing is hi-ml's inference transform: resize 512, centre-crop 480, pixels in [0, 1] without
normalisation, the gray channel copied to three. Pooled features are the 2048-d average-pooled trunk output
(``img_embedding``); ``encode_image`` is BioViL's ``projected_global_embedding`` (projector applied to every
patch, then averaged), L2-normalised. ``encode_text`` is CXR-BERT's ``get_projected_text_embeddings``: trailing
``!?.`` stripped as hi-ml's ``TextInput`` does, padded to the longest text, the last layer's [CLS] state through
the projection head, L2-normalised. Texts past ``max_position_embeddings`` (512) tokens are truncated, where hi-ml
raises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from transformers import BertConfig, BertTokenizer

from radlab.models import ENCODERS
from radlab.models.checkpoint import strip_prefix
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import (
    ChannelAdapter,
    feature_map_output,
    find_file,
    hf_model_from_state_dict,
    load_state_dict_file,
    text_dir,
)
from radlab.models.text_towers import HFTextTower
from radlab.models.towers import TowerOutput

log = logging.getLogger(__name__)
BIOVIL_SIZE = 480
BIOVIL_RESIZE = 512  # hi-ml: shorter side to 512, centre crop 480
BIOVIL_FILE = "biovil_image_resnet50_proj_size_128.pt"
CXR_BERT_DIRS = ("text", "cxr_bert", ".")
CXR_BERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CXR_BERT_PREFIXES = ("bert.", "cls.predictions.", "cls_projection_head.")
CXR_BERT_PROJECTION = 128  # CXRBertConfig's default projection_size
_CUSTOM_CONFIG_KEYS = ("auto_map", "architectures", "model_type", "projection_size")


class BioVilTower(nn.Module):
    """hi-ml's ``ImageEncoder``: ResNet trunk to layer4; pooled = global average of the last feature map."""

    def __init__(self, trunk: ResNet, adapter: ChannelAdapter) -> None:
        super().__init__()
        self.encoder = trunk
        self.adapter = adapter
        self.embed_dim: int = trunk.fc.in_features

    def forward(self, images: torch.Tensor) -> TowerOutput:
        m = self.encoder
        x = m.maxpool(m.relu(m.bn1(m.conv1(self.adapter(images)))))
        features = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return feature_map_output(features, features.mean(dim=(2, 3)))


class BioVilProjector(nn.Module):
    """hi-ml's ``MLP(use_1x1_convs=True)``: conv1x1 (no bias), BatchNorm2d, ReLU, conv1x1."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(input_dim, hidden_dim, 1, bias=False), nn.BatchNorm2d(hidden_dim),
                                   nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, output_dim, 1, bias=True))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.model(feature_map)


class CxrBertProjectionHead(nn.Module):
    """CXR-BERT's ``cls_projection_head`` (hi-ml's ``BertProjectionHead``): Linear, GELU, LayerNorm, Linear."""

    def __init__(self, hidden_size: int, projection_size: int) -> None:
        super().__init__()
        self.dense_to_hidden = nn.Linear(hidden_size, projection_size)
        self.transform_act_fn = nn.GELU()
        self.LayerNorm = nn.LayerNorm(projection_size, eps=1e-12)
        self.dense_to_output = nn.Linear(projection_size, projection_size)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        return self.dense_to_output(self.LayerNorm(self.transform_act_fn(self.dense_to_hidden(cls_state))))


class CxrBertTextTower(HFTextTower):
    """CXR-BERT's BERT pooled at [CLS]; texts are prepared as hi-ml's ``TextInput`` prepares prompts."""

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return super().tokenize([text.rstrip("!?.") for text in texts])


class BioVilEncoder(RadEncoder):
    """The image embedding projects every cell of the feature map (1x1 convolutions, BatchNorm, ReLU) and
    averages them, as BioViL does: not the projection of the pooled features."""

    def project_image(self, out: TowerOutput) -> torch.Tensor:
        fmap = out.tokens.transpose(1, 2).reshape(out.tokens.shape[0], -1, *out.grid)
        return self.image_proj(fmap).mean(dim=(2, 3))


def _trunk(state: dict[str, torch.Tensor]) -> ResNet:
    layers = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    block = Bottleneck if "layer1.0.conv3.weight" in state else BasicBlock
    return ResNet(block, layers, num_classes=state["fc.weight"].shape[0])


class _BioVilImageModel(nn.Module):
    """Mirrors hi-ml's ``ImageModel`` key layout so the checkpoint loads strictly."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        trunk = _trunk({k.removeprefix("encoder.encoder."): v for k, v in state.items()
                        if k.startswith("encoder.encoder.")})
        self.encoder = nn.Module()
        self.encoder.encoder = trunk
        first, last = state["projector.model.0.weight"], state["projector.model.3.weight"]
        self.projector = BioVilProjector(first.shape[1], first.shape[0], last.shape[0])


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], file: Path) -> None:
    """``load_state_dict(strict=True)``; a failure names the checkpoint file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{file}: {err}") from err


def _cxr_bert_config(folder: Path) -> tuple[BertConfig, int]:
    """The folder's config.json as a plain BertConfig (its custom-code entries dropped), and the projection size."""
    raw = json.loads(find_file(folder, ("config.json",)).read_text())
    config = BertConfig(**{k: v for k, v in raw.items() if k not in _CUSTOM_CONFIG_KEYS})
    return config, int(raw.get("projection_size", CXR_BERT_PROJECTION))


def _cxr_bert(folder: Path, joint_dim: int) -> tuple[CxrBertTextTower, CxrBertProjectionHead]:
    """CXR-BERT's text tower and projection head from its Hugging Face folder (see the module docstring)."""
    config, projection_size = _cxr_bert_config(folder)
    if projection_size != joint_dim:
        raise ValueError(f"{folder}: CXR-BERT projects to {projection_size} dims, the image projector to {joint_dim}")
    file = find_file(folder, CXR_BERT_WEIGHTS)
    state = load_state_dict_file(file)
    other = sorted(k for k in state if not k.startswith(CXR_BERT_PREFIXES))
    if other:
        raise ValueError(f"{file}: unexpected keys for CXR-BERT: {other[:5]}")
    head = CxrBertProjectionHead(config.hidden_size, projection_size)
    _load_strict(head, strip_prefix(state, "cls_projection_head."), file)
    bert_state = strip_prefix(state, "bert.")
    try:
        bert = hf_model_from_state_dict(config, bert_state, add_pooling_layer="pooler.dense.weight" in bert_state)
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from err
    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    return CxrBertTextTower(bert, tokenizer, "cls", config.max_position_embeddings), head


def _text_side(root: Path, joint_dim: int) -> tuple[CxrBertTextTower | None, CxrBertProjectionHead | None]:
    folder = text_dir(root, CXR_BERT_DIRS)
    if folder is None:
        log.info("BioViL: no CXR-BERT folder at %s (text/, cxr_bert/ or itself); image encoder only", root)
        return None, None
    return _cxr_bert(folder, joint_dim)


def load_biovil(path: str) -> RadEncoder:
    # not *.bin / *.safetensors: a CXR-BERT folder holding the image file has its own pytorch_model.bin
    file = find_file(Path(path).expanduser(), (BIOVIL_FILE,), ("*.pt", "*.pth"))
    state = load_state_dict_file(file, "state_dict", "model")
    image_model = _BioVilImageModel(state)
    _load_strict(image_model, state, file)
    adapter = ChannelAdapter([0.0] * 3, [1.0] * 3)
    tower = BioVilTower(image_model.encoder.encoder, adapter)
    projector = image_model.projector
    out_dim = projector.model[3].out_channels
    text, text_proj = _text_side(file.parent, out_dim)
    return BioVilEncoder(tower, text, out_dim, adapter.preprocess(BIOVIL_SIZE, "crop", BIOVIL_RESIZE),
                         image_proj=projector, text_proj=text_proj).eval()


ENCODERS.register("biovil", "BioViL: hi-ml image state dict (.pt); CXR-BERT-specialized folder in DIR/text or DIR "
                            "for text")(load_biovil)
