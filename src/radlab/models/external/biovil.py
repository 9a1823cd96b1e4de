"""The BioViL image encoder (hi-ml-multimodal ``ImageModel``): a torchvision ResNet-50 (or -18) trunk and a
1x1-convolution projector into BioViL's 128-d joint space.

``biovil:PATH`` takes ``biovil_image_resnet50_proj_size_128.pt`` (or a folder holding a ``.pt``): a state dict
with keys ``encoder.encoder.*`` (the torchvision ResNet, including its unused ``fc``) and ``projector.model.{0,1,3}.*``
(conv 2048->128, batch norm, ReLU, conv 128->128). Every key is loaded strictly.

Preprocessing is hi-ml's inference transform: resize 512, centre-crop 480, pixels in [0, 1] without
normalisation, the gray channel copied to three. Pooled features are the 2048-d average-pooled trunk output
(``img_embedding``); ``encode_image`` is BioViL's ``projected_global_embedding`` (projector applied to every
patch, then averaged), L2-normalised. The CXR-BERT text model is not loaded here.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from radlab.models import ENCODERS
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import ChannelAdapter, feature_map_output, find_file, load_state_dict_file
from radlab.models.towers import TowerOutput

BIOVIL_SIZE = 480
BIOVIL_RESIZE = 512  # hi-ml: shorter side to 512, centre crop 480
BIOVIL_FILE = "biovil_image_resnet50_proj_size_128.pt"


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


class BioVilEncoder(RadEncoder):
    """``encode_image`` projects every patch of the feature map and averages them, as BioViL does."""

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = self.image_tower(images)
        fmap = out.tokens.transpose(1, 2).reshape(out.tokens.shape[0], -1, *out.grid)
        z = self.image_proj(fmap).mean(dim=(2, 3))
        return F.normalize(z, dim=-1) if normalize else z


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


def load_biovil(path: str) -> RadEncoder:
    file = find_file(Path(path).expanduser(), (BIOVIL_FILE,), ("*.pt", "*.pth", "*.bin", "*.safetensors"))
    state = load_state_dict_file(file, "state_dict", "model")
    image_model = _BioVilImageModel(state)
    image_model.load_state_dict(state, strict=True)
    adapter = ChannelAdapter([0.0] * 3, [1.0] * 3)
    tower = BioVilTower(image_model.encoder.encoder, adapter)
    projector = image_model.projector
    out_dim = projector.model[3].out_channels
    return BioVilEncoder(tower, None, out_dim, adapter.preprocess(BIOVIL_SIZE, "crop", BIOVIL_RESIZE), image_proj=projector).eval()


ENCODERS.register("biovil", "BioViL image encoder: hi-ml ResNet-50 + projector state dict (.pt)")(load_biovil)
