"""BioViL image encoder (hi-ml ``ImageModel`` state dict): strict loading, hi-ml's forward reproduced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from external_checkpoints import make_biovil_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from radlab.models import load_encoder


def _reference(state: dict[str, torch.Tensor], images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hi-ml's ImageModel.forward on ExpandChannels(ToTensor(image)): (img_embedding, projected_global)."""
    trunk = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)
    trunk.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("encoder.encoder.")})
    joint = state["projector.model.0.weight"].shape[0]
    projector = nn.Sequential(nn.Conv2d(2048, joint, 1, bias=False), nn.BatchNorm2d(joint), nn.ReLU(),
                              nn.Conv2d(joint, joint, 1))
    projector.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("projector.model.")})
    trunk.eval(), projector.eval()
    x = images01.repeat_interleave(3, dim=1)
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    patch = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))
    return F.adaptive_avg_pool2d(patch, 1).flatten(1), projector(patch).mean(dim=(2, 3))


def test_biovil_matches_hi_ml_forward(tmp_path: Path) -> None:
    path, state = make_biovil_file(tmp_path)
    encoder = load_encoder(f"biovil:{tmp_path}")
    p = encoder.preprocess
    assert (p.image_size, p.mean, p.std, p.channels, p.fit, p.resize) == (480, 0.0, 1.0, 3, "crop", 512)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = encoder.image_output(p.normalise(images))
        embedding = encoder.encode_image(p.normalise(images), normalize=False)
        again = encoder.encode_image(p.normalise(images), normalize=False)
        pooled, projected = _reference(state, images)
    torch.testing.assert_close(out.pooled, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embedding, projected, atol=1e-5, rtol=1e-5)
    assert torch.equal(embedding, again)
    assert out.pooled.shape == (2, 2048) and out.tokens.shape == (2, 4, 2048) and out.grid == (2, 2)
    assert encoder.embed_dim == 8 and not encoder.has_text


def test_biovil_rejects_unexpected_or_missing_keys(tmp_path: Path) -> None:
    path, state = make_biovil_file(tmp_path)
    torch.save({**state, "classifier.fc_0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_encoder(f"biovil:{path}")
    torch.save({k: v for k, v in state.items() if k != "projector.model.1.running_var"}, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_encoder(f"biovil:{path}")
