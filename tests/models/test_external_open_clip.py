"""BiomedCLIP / open_clip hub-layout folders and CheXzero state dicts: radlab's encoder equals open_clip's model."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from transformers import BertConfig

from radlab.models import load_encoder
from radlab.models.external.open_clip_formats import CHEXZERO_MEAN, CHEXZERO_STD
from radlab.models.tokenizer import train_wordpiece

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXTS = ["FINDINGS: small left pleural effusion.", "No acute cardiopulmonary process.", "cardiomegaly"]
BIOMEDCLIP_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


def _vit_cfg(size: int = 32) -> dict:
    return {"image_size": size, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


def make_hub_dir(root: Path, variant: str) -> tuple[Path, torch.nn.Module]:
    """A tiny open_clip model in the hub layout (open_clip_config.json + open_clip_pytorch_model.bin).

    ``builtin``: CLIP with its own text transformer; ``custom``: CustomTextCLIP with a TextTransformer;
    ``biomedclip``: BiomedCLIP's structure (timm ViT trunk + linear proj, Hugging Face BERT text with CLS
    pooling and an MLP projection), its text config naming the hub id and the tiny BERT in ``text/``."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    text_cfg: dict = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    vision_cfg = _vit_cfg()
    model_cfg: dict = {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if variant == "custom":
        model_cfg["custom_text"] = True
    if variant == "biomedclip":
        tokenizer = train_wordpiece(TEXTS * 5, vocab_size=120)
        tokenizer.save_pretrained(root)
        bert = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
        bert.save_pretrained(root / "text")
        vision_cfg = {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                      "timm_proj": "linear", "image_size": 224}
        text_cfg = {"hf_model_name": str(root / "text"), "hf_tokenizer_name": str(root / "text"),
                    "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 24,
                    "hf_model_pretrained": False}
        model_cfg = {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
        model = open_clip.model.CustomTextCLIP(**json.loads(json.dumps(model_cfg))).eval()
        text_cfg = {**text_cfg, "hf_model_name": BIOMEDCLIP_TEXT, "hf_tokenizer_name": BIOMEDCLIP_TEXT}
        model_cfg = {**model_cfg, "text_cfg": text_cfg}
    elif variant == "custom":
        model = open_clip.model.CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"}).eval()
    else:
        model = open_clip.model.CLIP(**model_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    torch.save(model.state_dict(), root / "open_clip_pytorch_model.bin")
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    return root, model


def _rgb(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (images.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("variant", ["builtin", "custom", "biomedclip"])
def test_hub_layout_matches_open_clip(tmp_path: Path, variant: str) -> None:
    root, reference = make_hub_dir(tmp_path / variant, variant)
    encoder = load_encoder(f"{'biomedclip' if variant == 'biomedclip' else 'open_clip'}:{root}")
    size = encoder.preprocess.image_size
    assert size == (224 if variant == "biomedclip" else 32) and encoder.preprocess.channels == 3
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


def make_chexzero_file(root: Path, dtype: torch.dtype = torch.float32) -> tuple[Path, torch.nn.Module]:
    """A tiny OpenAI-CLIP ViT (QuickGELU, 77-token context) state dict, saved as CheXzero saves its ``.pt``."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    vision = open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32)
    text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
    model = open_clip.model.CLIP(16, vision, text, quick_gelu=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = root / "best_64_5e-05_original_22000_0.864.pt"
    torch.save({k: v.to(dtype) for k, v in model.state_dict().items()}, path)
    return path, model


def test_chexzero_matches_open_clip(tmp_path: Path) -> None:
    path, reference = make_chexzero_file(tmp_path)
    encoder = load_encoder(f"chexzero:{path}")
    assert encoder.preprocess.image_size == 32 and encoder.preprocess.channels == 3
    assert encoder.preprocess.mean == pytest.approx(CHEXZERO_MEAN) and encoder.preprocess.std == pytest.approx(CHEXZERO_STD)
    images = torch.rand(2, 1, 32, 32)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    with torch.no_grad():
        ours = encoder.encode_image(encoder.preprocess.normalise(images))
        theirs = reference.encode_image((images.expand(-1, 3, -1, -1) - CHEXZERO_MEAN) / CHEXZERO_STD, normalize=True)
        ours_text, theirs_text = encoder.encode_text(TEXTS), reference.encode_text(tokenizer(TEXTS), normalize=True)
        pooled = encoder.image_features(encoder.preprocess.normalise(images))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-5, rtol=1e-5)
    assert pooled.shape == (2, 64)
    assert load_encoder(f"chexzero:{tmp_path}").embed_dim == 16


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
