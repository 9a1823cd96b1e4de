"""MedCLIP ``pytorch_model.bin`` (Swin and ResNet variants): every key consumed, MedCLIP's forward reproduced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from external_checkpoints import make_medclip_dir

from radlab.models import load_encoder
from radlab.models.external.medclip import MEDCLIP_MEAN, MEDCLIP_STD

TEXTS = ["small left pleural effusion", "no acute cardiopulmonary process seen", "cardiomegaly"]


def _medclip_text(parts: dict, text: str) -> torch.Tensor:
    """MedCLIPTextModel.forward on one (unpadded) text: mean of hidden states 1, 2, -1, mean over tokens."""
    tokens = parts["tokenizer"]([text], return_tensors="pt")
    hidden = parts["bert"](input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                           output_hidden_states=True).hidden_states
    embed = torch.stack([hidden[1], hidden[2], hidden[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
    return parts["text_proj"](embed)[0]


@pytest.mark.parametrize("vision", ["swin", "resnet"])
def test_medclip_matches_medclip_forward(tmp_path: Path, vision: str) -> None:
    root, parts = make_medclip_dir(tmp_path, vision)
    encoder = load_encoder(f"medclip:{root}")
    p = encoder.preprocess
    assert (p.image_size, p.channels) == (224, 3)
    assert (p.mean, p.std) == (pytest.approx(MEDCLIP_MEAN), pytest.approx(MEDCLIP_STD))
    images = torch.rand(2, 1, 64, 64)
    pixel_values = ((images - MEDCLIP_MEAN) / MEDCLIP_STD).repeat(1, 3, 1, 1)
    with torch.no_grad():
        out = encoder.image_output(p.normalise(images))
        embedding = encoder.encode_image(p.normalise(images), normalize=False)
        if vision == "swin":
            pooled = parts["trunk"](pixel_values).pooler_output
            reference = parts["image_proj"](pooled)
        else:
            reference = parts["trunk"](pixel_values)
            trunk = parts["trunk"]
            x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(pixel_values))))
            pooled = trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x)))).mean(dim=(2, 3))
        ours_text = encoder.encode_text(TEXTS, normalize=False)
        theirs_text = torch.stack([_medclip_text(parts, t) for t in TEXTS])
    torch.testing.assert_close(out.pooled, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embedding, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-5, rtol=1e-5)
    assert embedding.shape == (2, 16) and encoder.embed_dim == 16
    assert encoder.pretrained_logit_scale == pytest.approx(float(torch.tensor(2.3).exp()))  # its log scale, 2.3
    assert out.tokens.shape[0] == 2 and out.grid[0] * out.grid[1] == out.tokens.shape[1]


def test_medclip_rejects_unexpected_keys(tmp_path: Path) -> None:
    root, _ = make_medclip_dir(tmp_path, "resnet")
    state = torch.load(root / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "vision_model.extra": torch.zeros(1)}, root / "pytorch_model.bin")
    with pytest.raises((RuntimeError, ValueError)):
        load_encoder(f"medclip:{root}")
    torch.save({**state, "text_model.model.encoder.layer.9.output.dense.weight": torch.zeros(2, 2)},
               root / "pytorch_model.bin")
    with pytest.raises((RuntimeError, ValueError)):
        load_encoder(f"medclip:{root}")
