"""GLoRIA Lightning checkpoints: strict loading, OmegaConf hyper-parameters read as data, GLoRIA's forward."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from transformers import BertConfig, BertModel

from radlab.models import load_encoder
from radlab.models.external.gloria import GloriaTextTower
from radlab.models.tokenizer import train_wordpiece

TEXTS = ["Small left pleural effusion. Heart size is normal.", "No acute cardiopulmonary process", "cardiomegaly"]


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


def make_gloria_dir(root: Path, monkeypatch: pytest.MonkeyPatch, last_n_layers: int = 2) -> tuple[Path, dict]:
    """A Lightning checkpoint with GLoRIA's keys, and Bio_ClinicalBERT's stand-in (tokenizer) in ``text/``."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece([t.lower() for t in TEXTS] * 5, vocab_size=120)
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
    DictConfig, _ = _fake_omegaconf(monkeypatch)
    hparams = DictConfig({"model": {"text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": last_n_layers,
                                             "aggregate_method": "sum", "embedding_dim": 64}},
                          "data": {"text": {"word_num": 20}}})
    checkpoint = {"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.1.4", "state_dict": state,
                  "hyper_parameters": hparams, "hparams_type": DictConfig,
                  "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]}]}
    torch.save(checkpoint, root / "chexpert_resnet50.ckpt")
    for name in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes"):
        monkeypatch.delitem(sys.modules, name)
    return root / "chexpert_resnet50.ckpt", {"trunk": trunk, "global": global_embedder, "bert": bert,
                                              "tokenizer": tokenizer}


def _gloria_sentence_embedding(bert: BertModel, tokenizer, text: str, last_n: int, word_num: int) -> torch.Tensor:
    """GLoRIA's BertEncoder (agg_tokens=True, aggregate 'sum') written out: merge word pieces into words up to
    [SEP], zero-pad, mean over all word positions, sum over the last n layers."""
    tokens = tokenizer(GloriaTextTower.clean(text), padding="max_length", truncation=True, max_length=word_num,
                       return_tensors="pt")
    out = bert(tokens["input_ids"], tokens["attention_mask"], output_hidden_states=True)
    layers = torch.stack(out.hidden_states[-last_n:]).permute(1, 2, 0, 3)[0]
    words, bank = [], []
    for emb, token_id in zip(layers, tokens["input_ids"][0], strict=True):
        word = tokenizer.convert_ids_to_tokens(int(token_id))
        if word == "[SEP]":
            words += [torch.stack(bank).sum(0), emb]
            break
        if not word.startswith("##") and bank:
            words.append(torch.stack(bank).sum(0))
            bank = []
        bank.append(emb)
    aggregated = torch.cat([torch.stack(words), torch.zeros(word_num - len(words), *layers.shape[1:])])
    return aggregated.mean(0).sum(0)


def test_gloria_matches_gloria_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, parts = make_gloria_dir(tmp_path, monkeypatch)
    encoder = load_encoder(f"gloria:{path}")
    p = encoder.preprocess
    assert (p.image_size, p.mean, p.std, p.channels) == (224, 0.5, 0.5, 3)
    assert encoder.text_tower.last_n_layers == 2 and encoder.text_tower.word_num == 20
    images = torch.rand(2, 1, 64, 64)
    trunk = parts["trunk"].eval()
    with torch.no_grad():
        out = encoder.image_output(p.normalise(images))
        x = F.interpolate((images.expand(-1, 3, -1, -1) - 0.5) / 0.5, size=(299, 299), mode="bilinear",
                          align_corners=True)
        pooled = trunk(x)
        torch.testing.assert_close(out.pooled, pooled, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(encoder.encode_image(p.normalise(images), normalize=False),
                                   parts["global"](pooled), atol=1e-5, rtol=1e-5)
        ours = encoder.encode_text(TEXTS, normalize=False)
        theirs = torch.stack([_gloria_sentence_embedding(parts["bert"], parts["tokenizer"], t, 2, 20) for t in TEXTS])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert out.tokens.shape == (2, 100, 2048) and out.grid == (10, 10) and encoder.embed_dim == 64


def test_gloria_rejects_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_gloria_dir(tmp_path, monkeypatch)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["gloria.img_encoder.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": checkpoint["state_dict"]}, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_encoder(f"gloria:{path}")


def test_gloria_without_tokenizer_is_image_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_gloria_dir(tmp_path, monkeypatch)
    for file in (tmp_path / "text").iterdir():
        file.unlink()
    (tmp_path / "text").rmdir()
    monkeypatch.setattr("radlab.models.external.gloria.load_tokenizer", lambda candidates: None)
    encoder = load_encoder(f"gloria:{path}")
    assert not encoder.has_text and encoder.image_features(torch.zeros(1, 3, 32, 32)).shape == (1, 2048)
