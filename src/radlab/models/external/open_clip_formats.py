"""CLIP-style encoders built with open_clip: BiomedCLIP / any open_clip hub-layout folder, and CheXzero.

- ``open_clip:DIR`` / ``biomedclip:DIR``: a folder in open_clip's hub layout (``open_clip_config.json`` with
  ``model_cfg`` and ``preprocess_cfg``, weights ``open_clip_pytorch_model.bin`` or ``*.safetensors``). For
  a Hugging Face text tower (BiomedCLIP's PubMedBERT) offline, its config is taken from ``DIR/text/`` or
  ``DIR`` itself when they hold a ``config.json``; tokenizer files are read from ``DIR`` (open_clip's own
  rule), else ``DIR/text/``. A non-existent DIR is passed to open_clip as ``hf-hub:DIR``.
- ``chexzero:FILE``: an OpenAI-CLIP state dict, ViT or ResNet (CheXzero's ``best_64_*.pt``; or a folder holding
  one). The architecture is read from the tensor shapes; preprocessing is CheXzero's (224 px, mean 101.48761/255,
  std 83.43944/255 on every channel).
- ``openai_clip:FILE``: the same state-dict form for other OpenAI-format CLIPs (e.g. PubMedCLIP), with OpenAI
  CLIP's preprocessing (RGB mean/std of ``open_clip.constants``, shorter side resized and centre-cropped).

Geometry follows open_clip's ``resize_mode`` (BiomedCLIP: shorter side to 224, centre crop); CheXzero pads, as its
preprocessing does. Image features are the pooled tower output *before* the CLIP projection; ``encode_image`` /
``encode_text`` apply the model's own projections, so they equal open_clip's ``encode_image`` /
``encode_text`` (normalised).

CLIP's ResNets (open_clip's ``ModifiedResNet``: RN50, RN101, RN50x4, ...) have no separate image projection: their
attention pool (the mean feature-map cell, as the query, attends over all cells) ends in ``c_proj``, which maps to
the joint space. radlab splits the pool there, as it splits a ViT before ``proj``: ``pooled`` is the attention-pool
output before ``c_proj`` (the ResNet width, 2048 for RN50), ``image_proj`` is ``c_proj``. ``c_proj`` is affine and
applied after the attention, so ``encode_image`` is open_clip's; and the tower's pooled feature, its tokens (the
layer4 feature map, ``grid`` its spatial size) and ``embed_dim`` all share one width, as every radlab tower's do
(fine-tuning heads and objectives read ``embed_dim`` as the pooled width).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from open_clip.transformer import text_global_pool
from torch import nn

from radlab.models import ENCODERS
from radlab.models.encoder import RadEncoder
from radlab.models.external.common import (
    TOKENIZER_FILES,
    ChannelAdapter,
    MatrixProjection,
    feature_map_output,
    find_file,
    load_state_dict_file,
)
from radlab.models.towers import TowerOutput

CHEXZERO_MEAN = 101.48761 / 255.0
CHEXZERO_STD = 83.43944 / 255.0


class OpenClipVisionTower(nn.Module):
    """An open_clip visual tower split into backbone (here) and projection (``take_projection``)."""

    def __init__(self, visual: nn.Module, adapter: ChannelAdapter) -> None:
        super().__init__()
        self.adapter = adapter
        self.visual = visual
        if isinstance(visual, open_clip.transformer.VisionTransformer):
            if getattr(visual, "attn_pool", None) is not None:
                raise NotImplementedError("open_clip ViTs with attention pooling (CoCa) are not supported")
            self.kind, self.embed_dim = "vit", visual.transformer.width
            self.patch = visual.patch_size[0]
            visual.output_tokens = True
        elif isinstance(visual, open_clip.timm_model.TimmModel):
            if any(name == "pool" for name, _ in visual.head.named_children()):
                raise NotImplementedError("open_clip timm towers with attention pooling are not supported")
            self.kind, self.embed_dim = "timm", visual.trunk.num_features
            self.prefix = getattr(visual.trunk, "num_prefix_tokens", 0)
        elif isinstance(visual, ModifiedResNet):
            self.kind, self.embed_dim = "resnet", visual.attnpool.k_proj.in_features
        else:
            raise NotImplementedError(f"open_clip visual tower {type(visual).__name__} is not supported")

    def take_projection(self) -> nn.Module:
        """Remove the tower's projection and return it as a module (the encoder's ``image_proj``)."""
        if self.kind == "vit":
            proj, self.visual.proj = self.visual.proj, None
            return MatrixProjection(proj) if proj is not None else nn.Identity()
        if self.kind == "resnet":
            pool = self.visual.attnpool
            proj, pool.c_proj = pool.c_proj, None
            return proj
        head = self.visual.head
        self.visual.head = nn.Identity()
        if len(head) == 0:
            classifier = self.visual.trunk.get_classifier()
            self.visual.trunk.reset_classifier(0)
            return classifier if isinstance(classifier, nn.Module) else nn.Identity()
        return head

    def forward(self, images: torch.Tensor) -> TowerOutput:
        x = self.adapter(images)
        if self.kind == "vit":
            pooled, tokens = self.visual(x)
            return TowerOutput(pooled, tokens, grid=(x.shape[-2] // self.patch, x.shape[-1] // self.patch))
        if self.kind == "resnet":
            features = _resnet_features(self.visual, x)
            return feature_map_output(features, _attention_pool(self.visual.attnpool, features))
        trunk = self.visual.trunk
        features = trunk.forward_features(x)
        pooled = trunk.forward_head(features, pre_logits=True)
        if features.ndim == 4:
            return feature_map_output(features, pooled)
        patches = features[:, self.prefix:]
        side = int(round(patches.shape[1] ** 0.5))
        return TowerOutput(pooled, patches, grid=(side, patches.shape[1] // max(side, 1)))


def _resnet_features(resnet: ModifiedResNet, x: torch.Tensor) -> torch.Tensor:
    """The layer4 feature map [B, C, H, W] of a ``ModifiedResNet``."""
    x = resnet.stem(x)
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = layer(x)
    return x


def _attention_pool(pool: AttentionPool2d, features: torch.Tensor) -> torch.Tensor:
    """``AttentionPool2d`` without its output projection ``c_proj``: the mean cell (plus the positional
    embedding, as every cell) queries all cells and itself; heads concatenated, [B, C]."""
    x = features.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(1, keepdim=True), x], 1) + pool.positional_embedding.to(x.dtype)
    batch, heads = x.shape[0], pool.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, t.shape[1], heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(pool.q_proj(x[:, :1])), split(pool.k_proj(x)), split(pool.v_proj(x)))
    return out.transpose(1, 2).reshape(batch, -1)


class OpenClipTextTower(nn.Module):
    """An open_clip text tower (CLIP's own transformer or a Hugging Face encoder) without its projection,
    with open_clip's tokenizer; ``tokenize`` returns ``input_ids`` and ``attention_mask``."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        text = getattr(model, "text", None)
        if text is None:
            self.kind = "clip"
            self.token_embedding, self.positional_embedding = model.token_embedding, model.positional_embedding
            self.transformer, self.ln_final = model.transformer, model.ln_final
            self.register_buffer("attn_mask", model.attn_mask, persistent=False)
            self.pool_type, self.eos_id = model.text_pool_type, getattr(model, "text_eos_id", None)
            self.embed_dim = model.transformer.width
            self._projection = model.text_projection
        elif isinstance(text, open_clip.hf_model.HFTextEncoder):
            self.kind, self.text = "hf", text
            self.embed_dim = text.transformer.config.hidden_size
            self.pad_id = text.config.pad_token_id
            self._projection = text.proj
        elif isinstance(text, open_clip.transformer.TextTransformer):
            self.kind, self.text = "transformer", text
            text.output_tokens = True
            self.embed_dim = text.width
            self._projection = text.text_projection
        else:
            raise NotImplementedError(f"open_clip text tower {type(text).__name__} is not supported")

    def take_projection(self) -> nn.Module:
        proj = self._projection
        del self._projection
        if self.kind == "hf":
            self.text.proj = nn.Identity()
        elif self.kind == "transformer":
            self.text.text_projection = None
        if proj is None:
            return nn.Identity()
        return proj if isinstance(proj, nn.Module) else MatrixProjection(proj)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(texts)
        if self.kind == "hf":
            mask = ids != self.pad_id
        else:
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            last = ((ids != 0).long() * positions).max(-1, keepdim=True).values
            mask = positions <= last
        return {"input_ids": ids, "attention_mask": mask.long()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        mask = attention_mask.bool()
        if self.kind == "hf":
            out = self.text.transformer(input_ids=input_ids, attention_mask=(input_ids != self.pad_id).long())
            pooled = self.text.pooler(out, (input_ids != self.pad_id).long())
            return TowerOutput(pooled, out.last_hidden_state, mask)
        if self.kind == "transformer":
            pooled, tokens = self.text(input_ids)
            return TowerOutput(pooled, tokens, mask[:, :tokens.shape[1]])
        x = self.token_embedding(input_ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        pooled = text_global_pool(x, input_ids, self.pool_type, eos_token_id=self.eos_id)
        return TowerOutput(pooled, x, mask)


def wrap_open_clip(model: nn.Module, tokenizer: Any, mean: Any, std: Any, image_size: int,
                   fit: str = "pad") -> RadEncoder:
    """A RadEncoder sharing an open_clip model's weights, with its projections as ``image_proj``/``text_proj``
    and its learned ``logit_scale`` (exponentiated) as ``pretrained_logit_scale``."""
    model = model.float().eval()
    mean = [float(mean)] * 3 if isinstance(mean, int | float) else [float(m) for m in mean]
    std = [float(std)] * 3 if isinstance(std, int | float) else [float(s) for s in std]
    adapter = ChannelAdapter(mean, std)
    image = OpenClipVisionTower(model.visual, adapter)
    text = OpenClipTextTower(model, tokenizer)
    image_proj, text_proj = image.take_projection(), text.take_projection()
    embed_dim = _output_dim(image_proj, image.embed_dim)
    encoder = RadEncoder(image, text, embed_dim, adapter.preprocess(image_size, fit), image_proj=image_proj,
                         text_proj=text_proj)
    encoder.pretrained_logit_scale = float(model.logit_scale.detach().exp())
    return encoder.eval()


def _output_dim(proj: nn.Module, default: int) -> int:
    with torch.no_grad():
        try:
            return int(proj(torch.zeros(1, default)).shape[-1])
        except RuntimeError:
            return default


def _local_text_dir(root: Path, text_cfg: dict) -> str | None:
    """A local folder holding the Hugging Face text model's config.json, for offline loading."""
    name = text_cfg.get("hf_model_name")
    if not name or Path(name).is_dir():
        return None
    for candidate in (root / "text", root / Path(name).name, root):
        config = candidate / "config.json"
        if config.is_file() and "model_type" in json.loads(config.read_text()):
            return str(candidate)
    return None


def load_open_clip_dir(path: str) -> RadEncoder:
    """An open_clip hub-layout folder (BiomedCLIP and others), or a hub id when no such folder exists."""
    root = Path(path).expanduser()
    if not root.is_dir():
        name = path if path.startswith("hf-hub:") else f"hf-hub:{path}"
        model, _, _ = open_clip.create_model_and_transforms(name)
        cfg = open_clip.get_model_preprocess_cfg(model)
        return wrap_open_clip(model, open_clip.get_tokenizer(name), cfg["mean"], cfg["std"], _size(cfg["size"]),
                              _fit(cfg))
    config = json.loads((root / "open_clip_config.json").read_text())
    text_cfg = copy.deepcopy(config["model_cfg"].get("text_cfg", {}))
    overrides: dict[str, Any] = {}
    local_text = _local_text_dir(root, text_cfg)
    if local_text is not None:
        text_cfg.update(hf_model_name=local_text, hf_model_pretrained=False)
        overrides["text_cfg"] = text_cfg
    try:
        model = open_clip.create_model(f"local-dir:{root}", require_pretrained=True, **overrides)
    except OSError as err:
        raise OSError(f"{root}: could not build the open_clip model offline ({err}); for a Hugging Face text "
                      f"tower put its config.json (and tokenizer) in {root / 'text'}") from err
    tokenizer = _tokenizer(root, text_cfg, local_text)
    cfg = open_clip.get_model_preprocess_cfg(model)
    return wrap_open_clip(model, tokenizer, cfg["mean"], cfg["std"], _size(cfg["size"]), _fit(cfg))


def _tokenizer(root: Path, text_cfg: dict, local_text: str | None) -> Any:
    if "hf_tokenizer_name" not in text_cfg:
        return open_clip.get_tokenizer(f"local-dir:{root}")
    source = str(root) if any((root / f).is_file() for f in TOKENIZER_FILES) else (
        local_text or text_cfg["hf_tokenizer_name"])
    return open_clip.tokenizer.HFTokenizer(source, context_length=text_cfg.get("context_length", 77),
                                           tokenizer_mode=text_cfg.get("tokenizer_mode"),
                                           **text_cfg.get("tokenizer_kwargs", {}))


def _size(size: Any) -> int:
    return int(size if isinstance(size, int | float) else size[0])


def _fit(cfg: dict) -> str:
    """open_clip's ``resize_mode``: "shortest" (its default: resize, centre crop) crops; "longest" pads, and
    so does "squash", whose stretching radlab does not reproduce (padding keeps the proportions)."""
    return "crop" if cfg.get("resize_mode", "shortest") == "shortest" else "pad"


def openai_state_model(path: str) -> nn.Module:
    """An open_clip CLIP from an OpenAI-format state dict (ViT or ResNet; architecture from tensor shapes),
    weights in float32."""
    file = find_file(Path(path).expanduser(), (), ("*.pt", "*.pth", "*.bin", "*.safetensors"))
    state = load_state_dict_file(file, "state_dict", "model")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = open_clip.model.build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None)
    model.float()
    extra = {"input_resolution", "context_length", "vocab_size"}
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k not in extra}
    model.load_state_dict(weights, strict=True)
    return model


def _wrap_openai(model: nn.Module, mean: Any, std: Any, fit: str) -> RadEncoder:
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    return wrap_open_clip(model, tokenizer, mean, std, _size(model.visual.image_size), fit)


def load_chexzero(path: str) -> RadEncoder:
    """CheXzero: its preprocessing (gray mean/std, padded to a square)."""
    return _wrap_openai(openai_state_model(path), CHEXZERO_MEAN, CHEXZERO_STD, "pad")


def load_openai_clip(path: str) -> RadEncoder:
    """Any other OpenAI-format CLIP state dict (e.g. PubMedCLIP): OpenAI CLIP's preprocessing (its RGB
    mean/std; shorter side resized, centre crop)."""
    return _wrap_openai(openai_state_model(path), OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, "crop")


ENCODERS.register("open_clip", "an open_clip hub-layout folder (open_clip_config.json + weights)")(load_open_clip_dir)
ENCODERS.register("biomedclip", "BiomedCLIP in open_clip's hub layout (offline: text config in DIR/text)")(
    load_open_clip_dir)
ENCODERS.register("chexzero", "CheXzero: an OpenAI-CLIP ViT/ResNet state dict (.pt), CheXzero preprocessing")(
    load_chexzero)
ENCODERS.register("openai_clip", "an OpenAI-CLIP ViT/ResNet state dict (.pt), OpenAI CLIP preprocessing")(
    load_openai_clip)
