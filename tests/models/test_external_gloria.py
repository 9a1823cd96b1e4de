"""GLoRIA Lightning checkpoints: strict loading, OmegaConf hyper-parameters read as data, GLoRIA's forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from external_checkpoints import make_gloria_dir
from transformers import BertModel

from radlab.models import load_encoder
from radlab.models.external.gloria import GloriaTextTower

TEXTS = ["Small left pleural effusion. Heart size is normal.", "No acute cardiopulmonary process", "cardiomegaly"]
WORDED = TEXTS[:2]  # GLoRIA's cleaning drops one-word sentences: the last text has no word


def _gloria_words(bert: BertModel, tokenizer, text: str, last_n: int, word_num: int) -> torch.Tensor:
    """GLoRIA's BertEncoder word embeddings (agg_tokens=True, aggregate 'sum') written out: merge word pieces
    into words up to [SEP], [CLS] and [SEP] kept as words, each [last_n layers, D]."""
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
    return torch.stack(words)


def _gloria_sentence_embedding(bert: BertModel, tokenizer, text: str, last_n: int, word_num: int) -> torch.Tensor:
    """GLoRIA's sentence embedding: the words zero-padded to ``word_num``, mean over positions, sum over layers."""
    words = _gloria_words(bert, tokenizer, text, last_n, word_num)
    return torch.cat([words, torch.zeros(word_num - len(words), *words.shape[1:])]).mean(0).sum(0)


def test_gloria_matches_gloria_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, parts = make_gloria_dir(tmp_path, monkeypatch)
    encoder = load_encoder(f"gloria:{path}")
    p = encoder.preprocess
    assert (p.image_size, p.mean, p.std, p.channels, p.fit, p.resize) == (224, 0.5, 0.5, 3, "pad", 256)
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


def test_gloria_local_branch_reads_layer3_regions_and_whole_words(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path, parts = make_gloria_dir(tmp_path, monkeypatch)
    encoder = load_encoder(f"gloria:{path}")
    matcher, tower = encoder.local_match, encoder.text_tower
    assert (matcher.temp_attention, matcher.temp_words, matcher.word_softmax) == (4.5, 5.5, True)  # from hparams
    images = torch.rand(2, 1, 64, 64)
    trunk = parts["trunk"].eval()
    with torch.no_grad():
        ours = matcher.regions(encoder.image_output(encoder.preprocess.normalise(images)))
        x = F.interpolate((images.expand(-1, 3, -1, -1) - 0.5) / 0.5, size=(299, 299), mode="bilinear",
                          align_corners=True)
        x = trunk.layer3(trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x)))))))
        torch.testing.assert_close(ours, parts["local"](x).flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
        tokens = tower.tokenize(WORDED)
        words, mask = matcher.words(encoder.text_output(tokens), tokens, tower.tokenizer)
        for k, text in enumerate(WORDED):  # GLoRIA's words without its [CLS] and [SEP]
            theirs = _gloria_words(parts["bert"], parts["tokenizer"], text, 2, 20)[1:-1].sum(1)
            torch.testing.assert_close(words[k, mask[k]], theirs, atol=1e-5, rtol=1e-5)
    assert ours.shape == (2, 19 * 19, 64) and int(mask.sum()) > len(WORDED)
    with pytest.raises(ValueError, match="no word-region similarity, for text 2"):
        tokens = tower.tokenize(TEXTS)
        matcher.words(encoder.text_output(tokens), tokens, tower.tokenizer)


def test_gloria_rejects_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_gloria_dir(tmp_path, monkeypatch, extra={"gloria.img_encoder.extra.weight": torch.zeros(1)})
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
