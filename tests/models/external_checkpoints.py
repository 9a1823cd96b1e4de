"""Tiny random checkpoints in the real external formats (file names, key names, config layouts), shared by
the external-encoder, export and CLI tests."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    Dinov2Config,
    Dinov2Model,
    SwinConfig,
    SwinModel,
)

from radlab.models.tokenizer import SPECIAL_TOKENS, build_vocab, train_wordpiece

RAD_DINO_MEAN, RAD_DINO_STD = 0.5307, 0.2583


def rad_dino_processor(size: int) -> dict:
    """RAD-DINO's preprocessor_config.json layout (BitImageProcessor), at a test size."""
    return {"crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [RAD_DINO_MEAN] * 3,
            "image_processor_type": "BitImageProcessor", "image_std": [RAD_DINO_STD] * 3, "resample": 3,
            "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": size}}


# transformers 5 saves Dinov2 attention as q/k/v/o_proj; microsoft/rad-dino's model.safetensors has 4.x names
DINOV2_4X_KEYS = {"attention.q_proj.": "attention.attention.query.", "attention.k_proj.": "attention.attention.key.",
                  "attention.v_proj.": "attention.attention.value.", "attention.o_proj.": "attention.output.dense."}


def make_rad_dino_dir(root: Path, size: int = 56, transformers_4_keys: bool = False) -> Path:
    """A tiny random Dinov2 saved like microsoft/rad-dino (config.json, model.safetensors, preprocessor); with
    ``transformers_4_keys`` its weights carry the key names of the published file."""
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=size, patch_size=14)
    Dinov2Model(config).eval().save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(rad_dino_processor(size)))
    if transformers_4_keys:
        state = load_file(str(root / "model.safetensors"))
        renamed = {}
        for key, value in state.items():
            for new, old in DINOV2_4X_KEYS.items():
                key = key.replace(new, old)
            renamed[key] = value
        save_file(renamed, str(root / "model.safetensors"), metadata={"format": "pt"})
    return root


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXTS = ["FINDINGS: small left pleural effusion.", "No acute cardiopulmonary process.", "cardiomegaly"]
REPORTS = [*TEXTS, "Small left pleural effusion. Heart size is normal.", "no acute cardiopulmonary process seen",
           "pneumothorax", "atelectasis", "consolidation", "edema", "nodule", "no finding"]
BIOMEDCLIP_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


def _vit_cfg(size: int = 32) -> dict:
    return {"image_size": size, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


def _resnet_cfg(size: int = 64) -> dict:
    """CLIP's ModifiedResNet (``layers`` a sequence), at a test width: 256 features, 4 heads, a 2x2 layer4 grid."""
    return {"image_size": size, "layers": [1, 1, 1, 1], "width": 8}


def _randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial BatchNorm running statistics, so that eval-mode normalisation is exercised."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def make_hub_dir(root: Path, variant: str, context_length: int = 16) -> tuple[Path, torch.nn.Module]:
    """A tiny open_clip model in the hub layout (open_clip_config.json + open_clip_pytorch_model.bin).

    ``builtin``: CLIP with its own text transformer; ``resnet``: the same with a ModifiedResNet (64 px);
    ``custom``: CustomTextCLIP with a TextTransformer;
    ``biomedclip``: BiomedCLIP's structure (timm ViT trunk (timm's small test_vit) + linear proj, Hugging Face BERT text with CLS
    pooling and an MLP projection), its text config naming the hub id and the tiny BERT in ``text/``."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    text_cfg: dict = {"context_length": context_length, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    vision_cfg = _resnet_cfg() if variant == "resnet" else _vit_cfg()
    model_cfg: dict = {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if variant == "custom":
        model_cfg["custom_text"] = True
    if variant == "biomedclip":
        tokenizer = train_wordpiece(TEXTS * 5, vocab_size=120)
        tokenizer.save_pretrained(root)
        bert = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
        bert.save_pretrained(root / "text")
        vision_cfg = {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                      "timm_proj": "linear", "image_size": 160}
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
        model.logit_scale.fill_(math.log(50.0))  # a trained temperature, unlike open_clip's initial 1 / 0.07
        _randomise_batch_norm(model)
    torch.save(model.state_dict(), root / "open_clip_pytorch_model.bin")
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    return root, model


def make_chexzero_file(root: Path, dtype: torch.dtype = torch.float32,
                       vision_tower: str = "vit") -> tuple[Path, torch.nn.Module]:
    """A tiny OpenAI-CLIP state dict (QuickGELU, 77-token context), saved as CheXzero saves its ``.pt``;
    ``vision_tower`` "vit" (32 px) or "resnet" (a ModifiedResNet, 64 px, as CLIP's RN50 with BatchNorm buffers)."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    if vision_tower == "resnet":
        vision = open_clip.model.CLIPVisionCfg(**_resnet_cfg())
    else:
        vision = open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32)
    text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
    model = open_clip.model.CLIP(16, vision, text, quick_gelu=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        _randomise_batch_norm(model)
    path = root / "best_64_5e-05_original_22000_0.864.pt"
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path, model


def make_biovil_file(root: Path, joint: int = 8) -> tuple[Path, dict[str, torch.Tensor]]:
    """hi-ml's key layout: ``encoder.encoder.*`` (torchvision ResNet incl. its fc) + ``projector.model.{0,1,3}``."""
    torch.manual_seed(0)
    trunk = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)
    projector = nn.Sequential(nn.Conv2d(2048, joint, 1, bias=False), nn.BatchNorm2d(joint), nn.ReLU(),
                              nn.Conv2d(joint, joint, 1))
    for module in [*trunk.modules(), *projector.modules()]:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {f"encoder.encoder.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"projector.model.{k}": v for k, v in projector.state_dict().items()})
    path = root / "biovil_image_resnet50_proj_size_128.pt"
    torch.save(state, path)
    return path, state


CXR_BERT_AUTO_MAP = {"AutoConfig": "configuration_cxrbert.CXRBertConfig", "AutoModel": "modeling_cxrbert.CXRBertModel"}


def _cxr_bert_tokenizer_files(root: Path) -> list[str]:
    """microsoft/BiomedVLP-CXR-BERT-specialized's tokenizer files: vocab.txt, special_tokens_map.json and a
    tokenizer_config.json naming the custom ``CXRBertTokenizer`` (which only transformers' remote code resolves)."""
    vocab = build_vocab(REPORTS * 5, vocab_size=160)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS, strict=True))
    (root / "special_tokens_map.json").write_text(json.dumps(special))
    (root / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "do_basic_tokenize": True, "never_split": None, **special,
        "tokenize_chinese_chars": True, "strip_accents": None, "tokenizer_file": None,
        "tokenizer_class": "CXRBertTokenizer", "auto_map": {"AutoTokenizer": ["configuration_cxrbert.CXRBertTokenizer",
                                                                              None]}}))
    return vocab


def make_cxr_bert_dir(root: Path, projection_size: int = 8) -> tuple[Path, dict]:
    """A tiny CXR-BERT-specialized folder in the hub layout: config.json (``model_type: cxr-bert``,
    ``projection_size``, ``auto_map`` to the custom code), pytorch_model.bin with ``CXRBertModel``'s keys
    (``bert.*`` incl. the ``position_ids`` buffer older transformers saved, the masked-LM head ``cls.predictions.*``,
    ``cls_projection_head.{dense_to_hidden,LayerNorm,dense_to_output}.*``) and the tokenizer files."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vocab = _cxr_bert_tokenizer_files(root)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.25,
                        attention_probs_dropout_prob=0.25, pad_token_id=0)
    mlm = BertForMaskedLM(config).eval()
    head = {"dense_to_hidden": nn.Linear(32, projection_size), "LayerNorm": nn.LayerNorm(projection_size, eps=1e-12),
            "dense_to_output": nn.Linear(projection_size, projection_size)}
    state = dict(mlm.state_dict())
    state["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    state.update({f"cls_projection_head.{name}.{k}": v for name, layer in head.items()
                  for k, v in layer.state_dict().items()})
    with torch.no_grad():
        state = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, root / "pytorch_model.bin")
    (root / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": ["CXRBertModel"],
                                                  "auto_map": CXR_BERT_AUTO_MAP, "model_type": "cxr-bert",
                                                  "projection_size": projection_size}))
    return root, {"state": state, "config": config, "vocab": vocab}


def _fake_omegaconf(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """Classes pickled under omegaconf's names, with OmegaConf's state layout (``_content``, ``_val``)."""
    package, dictconfig, nodes = (types.ModuleType(n) for n in ("omegaconf", "omegaconf.dictconfig",
                                                                   "omegaconf.nodes"))

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._content = {k: DictConfig(v) if isinstance(v, dict) else AnyNode(v) for k, v in content.items()}
            self._parent = None

    class AnyNode:
        def __init__(self, value: object) -> None:
            self._val = value

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    AnyNode.__module__, AnyNode.__qualname__ = "omegaconf.nodes", "AnyNode"
    dictconfig.DictConfig, nodes.AnyNode = DictConfig, AnyNode
    for name, module in (("omegaconf", package), ("omegaconf.dictconfig", dictconfig), ("omegaconf.nodes", nodes)):
        monkeypatch.setitem(sys.modules, name, module)
    return DictConfig, AnyNode


def _hparams(config: dict, monkeypatch: pytest.MonkeyPatch) -> object:
    """The config as an OmegaConf DictConfig (as GLoRIA's ``save_hyperparameters(cfg)`` stores it); a stand-in
    pickled under OmegaConf's class names when omegaconf is not installed."""
    try:
        from omegaconf import OmegaConf

        return OmegaConf.create(config)
    except ImportError:
        return _fake_omegaconf(monkeypatch)[0](config)


def make_gloria_dir(root: Path, monkeypatch: pytest.MonkeyPatch, last_n_layers: int = 2,
                    extra: dict | None = None) -> tuple[Path, dict]:
    """A Lightning checkpoint with GLoRIA's keys, and Bio_ClinicalBERT's stand-in (tokenizer) in ``text/``."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece([t.lower() for t in REPORTS] * 5, vocab_size=160)
    tokenizer.save_pretrained(root / "text")
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=3, num_attention_heads=1,
                                intermediate_size=64, max_position_embeddings=128)).eval()
    trunk = ResNet(Bottleneck, [1, 1, 1, 1])
    trunk.fc = nn.Identity()
    global_embedder, local_embedder = nn.Linear(2048, 64), nn.Conv2d(1024, 64, 1, bias=False)
    state = {f"gloria.img_encoder.model.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"gloria.img_encoder.global_embedder.{k}": v for k, v in global_embedder.state_dict().items()})
    state["gloria.img_encoder.local_embedder.weight"] = local_embedder.weight.detach()
    state.update({f"gloria.text_encoder.model.{k}": v for k, v in bert.state_dict().items()})
    state["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    state.update(extra or {})
    hparams = _hparams({"model": {"text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": last_n_layers,
                                             "aggregate_method": "sum", "embedding_dim": 64},
                                   "gloria": {"temp1": 4.5, "temp2": 5.5, "temp3": 10.0}},
                        "data": {"text": {"word_num": 20}}}, monkeypatch)
    checkpoint = {"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.1.4", "state_dict": state,
                  "hyper_parameters": hparams, "hparams_type": type(hparams),
                  "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]}]}
    torch.save(checkpoint, root / "chexpert_resnet50.ckpt")
    monkeypatch.undo()
    return root / "chexpert_resnet50.ckpt", {"trunk": trunk, "global": global_embedder, "local": local_embedder,
                                              "bert": bert, "tokenizer": tokenizer}


OLD_SWIN_NAMES = [("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
                  ("attention.v_proj", "attention.self.value"),
                  ("attention.relative_position_bias.relative_position_bias_table",
                   "attention.self.relative_position_bias_table"),
                  ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                  ("mlp.fc2", "output.dense")]


def old_swin_state(model: SwinModel) -> dict[str, torch.Tensor]:
    """The Swin weights under the key names of the transformers 4.x release MedCLIP was saved with (including
    its persistent ``relative_position_index`` buffers)."""
    state = {}
    for key, value in model.state_dict().items():
        for new, old in OLD_SWIN_NAMES:
            key = key.replace(new, old)
        state[key] = value
        if key.endswith("relative_position_bias_table"):
            window = model.config.window_size
            state[key.replace("bias_table", "index")] = torch.randint(0, value.shape[0], (window**2, window**2))
    return state


def make_medclip_dir(root: Path, vision: str) -> tuple[Path, dict]:
    torch.manual_seed(0)
    tokenizer = train_wordpiece(REPORTS * 5, vocab_size=160)
    tokenizer.save_pretrained(root / "text")
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=3, num_attention_heads=1,
                                intermediate_size=64, max_position_embeddings=80)).eval()
    state = {f"text_model.model.{k}": v for k, v in bert.state_dict().items()}
    state["text_model.model.embeddings.position_ids"] = torch.arange(80).unsqueeze(0)
    text_proj = nn.Linear(64, 16, bias=False)
    state["text_model.projection_head.weight"] = text_proj.weight.detach()
    state["logit_scale"] = torch.tensor(2.3)
    if vision == "swin":
        trunk = SwinModel(SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 2], num_heads=[1, 2],
                                     window_size=4, mlp_ratio=2.0)).eval()
        state.update({f"vision_model.model.{k}": v for k, v in old_swin_state(trunk).items()})
        image_proj = nn.Linear(32, 16, bias=False)
        state["vision_model.projection_head.weight"] = image_proj.weight.detach()
    else:
        trunk = ResNet(Bottleneck, [1, 1, 1, 1])
        trunk.fc = image_proj = nn.Linear(2048, 16, bias=False)
        trunk.eval()
        state.update({f"vision_model.model.{k}": v for k, v in trunk.state_dict().items()})
    torch.save(state, root / "pytorch_model.bin")
    return root, {"bert": bert, "text_proj": text_proj, "trunk": trunk, "image_proj": image_proj,
                  "tokenizer": tokenizer}


