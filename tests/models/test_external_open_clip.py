"""BiomedCLIP / open_clip hub-layout folders and CheXzero state dicts: radlab's encoder equals open_clip's model."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from external_checkpoints import OPENAI_MEAN, OPENAI_STD, TEXTS, make_chexzero_file, make_hub_dir
from open_clip.modified_resnet import ModifiedResNet

from radlab.models import load_encoder
from radlab.models.external.open_clip_formats import CHEXZERO_MEAN, CHEXZERO_STD


def _rgb(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (images.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("variant", ["builtin", "custom", "biomedclip"])
def test_hub_layout_matches_open_clip(tmp_path: Path, variant: str) -> None:
    root, reference = make_hub_dir(tmp_path / variant, variant)
    encoder = load_encoder(f"{'biomedclip' if variant == 'biomedclip' else 'open_clip'}:{root}")
    size = encoder.preprocess.image_size
    assert size == (160 if variant == "biomedclip" else 32) and encoder.preprocess.channels == 3
    assert encoder.preprocess.fit == "crop"  # open_clip's default resize_mode "shortest": resize, centre crop
    images = torch.rand(2, 1, size, size)
    if variant == "biomedclip":
        tokenizer = open_clip.tokenizer.HFTokenizer(str(root), context_length=24)
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{root}")
    with torch.no_grad():
        ours_image = encoder.encode_image(encoder.preprocess.normalise(images))
        theirs_image = reference.encode_image(_rgb(images, OPENAI_MEAN, OPENAI_STD), normalize=True)
        ours_text = encoder.encode_text(TEXTS)
        theirs_text = reference.encode_text(tokenizer(TEXTS), normalize=True)
        tokens = encoder.text_output(encoder.text_tower.tokenize(TEXTS))
    torch.testing.assert_close(ours_image, theirs_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-5, rtol=1e-5)
    assert ours_image.shape == (2, 16) and tokens.tokens.shape[:2] == tokens.mask.shape
    assert tokens.mask.sum(1).min() >= 3
    assert encoder.pretrained_logit_scale == pytest.approx(float(reference.logit_scale.detach().exp()))


def test_open_clip_reference_loader_agrees(tmp_path: Path) -> None:
    """For a self-contained folder, open_clip's own ``local-dir:`` loader gives the same embeddings."""
    root, _ = make_hub_dir(tmp_path / "clip", "builtin")
    encoder = load_encoder(f"open_clip:{root}")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{root}")
    images = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        theirs = model.eval().encode_image(_rgb(images, OPENAI_MEAN, OPENAI_STD), normalize=True)
        torch.testing.assert_close(encoder.encode_image(encoder.preprocess.normalise(images)), theirs,
                                   atol=1e-5, rtol=1e-5)
        out = encoder.image_output(encoder.preprocess.normalise(images))
    assert out.tokens.shape == (1, 4, 32) and out.grid == (2, 2) and out.pooled.shape == (1, 32)


@pytest.mark.parametrize("tower,size,pooled,tokens", [("vit", 32, 64, (2, 4, 64)), ("resnet", 64, 256, (2, 4, 256))])
def test_chexzero_matches_open_clip(tmp_path: Path, tower: str, size: int, pooled: int, tokens: tuple) -> None:
    """OpenAI-format CLIP state dicts, ViT or ResNet (CheXzero, or trained on RN50 as PubMedCLIP's), load by
    tensor shapes with CheXzero's preprocessing and equal open_clip's model."""
    path, reference = make_chexzero_file(tmp_path, vision_tower=tower)
    encoder = load_encoder(f"chexzero:{path}")
    assert encoder.preprocess.image_size == size and encoder.preprocess.channels == 3
    assert encoder.preprocess.fit == "pad"  # CheXzero pads to a square
    assert encoder.preprocess.mean == pytest.approx(CHEXZERO_MEAN) and encoder.preprocess.std == pytest.approx(CHEXZERO_STD)
    assert isinstance(encoder.image_tower.visual, ModifiedResNet) == (tower == "resnet")
    images = torch.rand(2, 1, size, size)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    with torch.no_grad():
        ours = encoder.encode_image(encoder.preprocess.normalise(images))
        theirs = reference.encode_image((images.expand(-1, 3, -1, -1) - CHEXZERO_MEAN) / CHEXZERO_STD, normalize=True)
        ours_text, theirs_text = encoder.encode_text(TEXTS), reference.encode_text(tokenizer(TEXTS), normalize=True)
        out = encoder.image_output(encoder.preprocess.normalise(images))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-5, rtol=1e-5)
    assert out.pooled.shape == (2, pooled) and out.tokens.shape == tokens
    assert load_encoder(f"chexzero:{tmp_path}").embed_dim == 16


def test_resnet_hub_layout_matches_open_clip(tmp_path: Path) -> None:
    """A ModifiedResNet CLIP (RN50's structure): pooled = attention pool before ``c_proj``, image_proj = c_proj."""
    root, reference = make_hub_dir(tmp_path / "rn", "resnet")
    encoder = load_encoder(f"open_clip:{root}")
    assert isinstance(encoder.image_tower.visual, ModifiedResNet)
    assert encoder.preprocess.image_size == 64 and encoder.embed_dim == 16 and encoder.image_tower.embed_dim == 256
    images = torch.rand(2, 1, 64, 64)
    inputs = _rgb(images, OPENAI_MEAN, OPENAI_STD)
    local, _, _ = open_clip.create_model_and_transforms(f"local-dir:{root}")
    with torch.no_grad():
        ours = encoder.encode_image(encoder.preprocess.normalise(images), normalize=False)
        out = encoder.image_output(encoder.preprocess.normalise(images))
        torch.testing.assert_close(ours, reference.encode_image(inputs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=-1),
                                   local.eval().encode_image(inputs, normalize=True), atol=1e-5, rtol=1e-5)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{root}")
        torch.testing.assert_close(encoder.encode_text(TEXTS), reference.encode_text(tokenizer(TEXTS), normalize=True),
                                   atol=1e-5, rtol=1e-5)
        layer4 = reference.visual.layer4(reference.visual.layer3(reference.visual.layer2(reference.visual.layer1(
            reference.visual.stem(inputs)))))
    assert out.pooled.shape == (2, 256) and out.tokens.shape == (2, 4, 256) and out.grid == (2, 2)
    torch.testing.assert_close(out.tokens, layer4.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_openai_clip_is_the_same_model_with_openai_preprocessing(tmp_path: Path) -> None:
    """``openai_clip:`` reads the CheXzero file form but feeds the model OpenAI CLIP's per-channel statistics."""
    path, reference = make_chexzero_file(tmp_path, vision_tower="resnet")
    encoder = load_encoder(f"openai_clip:{path}")
    assert encoder.preprocess.fit == "crop" and load_encoder(f"chexzero:{path}").preprocess.fit == "pad"
    images = torch.rand(2, 1, 64, 64)
    rgb = (images.expand(-1, 3, -1, -1) - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = encoder.encode_image(encoder.preprocess.normalise(images))
        theirs = reference.encode_image(rgb, normalize=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_chexzero_half_precision_file_loads_in_float32(tmp_path: Path) -> None:
    path, reference = make_chexzero_file(tmp_path, torch.float16)
    encoder = load_encoder(f"chexzero:{path}")
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    images = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        theirs = reference.encode_image((images.expand(-1, 3, -1, -1) - CHEXZERO_MEAN) / CHEXZERO_STD, normalize=True)
        torch.testing.assert_close(encoder.encode_image(encoder.preprocess.normalise(images)), theirs, atol=2e-2,
                                   rtol=0)


def test_chexzero_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_encoder(f"chexzero:{tmp_path}")
