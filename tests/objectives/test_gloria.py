"""GLoRIA's loss against a plain loop over image-report pairs written from the released code's equations, its
word aggregation, and the objective's wiring of an encoder's tokens into both terms."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.local_matching import LocalMatcher, local_similarity, word_membership
from radlab.models.tokenizer import train_wordpiece
from radlab.models.towers import TowerOutput
from radlab.objectives.gloria import GloriaObjective, local_loss

T1, T2, T3 = 4.0, 5.0, 10.0


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reference_z(region: np.ndarray, word: np.ndarray, word_softmax: bool) -> float:
    """Z for one image (regions [R, D]) and one report (its real words [W, D]), one pair at a time."""
    scores = region @ word.T  # [R, W]
    if word_softmax:  # released code: each region's scores normalised over the words first
        scores = _softmax(scores, axis=1)
    attention = _softmax(T1 * scores.T, axis=1)  # [W, R]: each word over the regions
    context = attention @ region
    cosine = (context * word).sum(1) / (np.linalg.norm(context, axis=1) * np.linalg.norm(word, axis=1))
    return float(np.log(np.exp(T2 * cosine).sum()))


def _reference_local_loss(regions: np.ndarray, words: np.ndarray, lengths: list[int], word_softmax: bool) -> float:
    n = len(regions)
    sim = np.array([[T3 * _reference_z(regions[b], words[t, : lengths[t]], word_softmax) for t in range(n)]
                    for b in range(n)])
    image_to_report = -np.mean([np.log(_softmax(sim[b], 0)[b]) for b in range(n)])
    report_to_image = -np.mean([np.log(_softmax(sim[:, t], 0)[t]) for t in range(n)])
    return image_to_report + report_to_image


def _random_pairs(seed: int, n: int = 5, regions: int = 6, width: int = 7, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, regions, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, width, dim, generator=g, dtype=torch.float64)
    lengths = [int(x) for x in torch.randint(1, width + 1, (n,), generator=g)]
    lengths[0] = width
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    return r, w * mask[..., None], mask, lengths


@pytest.mark.parametrize("word_softmax", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_local_loss_equals_a_plain_loop_over_pairs(seed: int, word_softmax: bool) -> None:
    regions, words, mask, lengths = _random_pairs(seed)
    ours = local_loss(regions, words, mask, T1, T2, T3, word_softmax)
    expected = _reference_local_loss(regions.numpy(), words.numpy(), lengths, word_softmax)
    assert abs(float(ours) - expected) < 1e-10


def test_padding_words_do_not_change_the_similarity_and_chunks_agree() -> None:
    regions, words, mask, _ = _random_pairs(2)
    base = local_similarity(regions, words, mask, T1, T2)
    padded = local_similarity(regions, F.pad(words, (0, 0, 0, 3), value=5.0), F.pad(mask, (0, 3)), T1, T2)
    chunked = local_similarity(regions, words, mask, T1, T2, chunk_elements=1)
    torch.testing.assert_close(padded, base, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked, base, rtol=0, atol=1e-12)


def test_word_pieces_are_summed_into_words_and_special_tokens_dropped() -> None:
    tokenizer = train_wordpiece(["left lung clear", "no effusion"], vocab_size=60)
    tokens = tokenizer(["left sinus", "no €"], padding=True, return_tensors="pt")
    pieces = [tokenizer.convert_ids_to_tokens(row) for row in tokens["input_ids"].tolist()]
    membership = word_membership(tokens["input_ids"], tokens["attention_mask"], tokenizer)
    assert pieces[0][:3] == ["[CLS]", "left", "s"] and pieces[0][3] == "##i"
    assert membership.shape[1] == 2  # the longest report has two words
    assert membership[0, 0].nonzero().flatten().tolist() == [1]
    assert membership[0, 1].nonzero().flatten().tolist() == list(range(2, 2 + len("sinus")))
    assert pieces[1][2] == "[UNK]" and membership[1, 1].nonzero().flatten().tolist() == [2]  # unknown is a word
    assert membership.sum(1).max() == 1  # a token belongs to at most one word; [CLS], [SEP], [PAD] to none
    empty = tokenizer(["no", ""], padding=True, return_tensors="pt")
    assert word_membership(empty["input_ids"], empty["attention_mask"], tokenizer)[1].sum() == 0
    with pytest.raises(ValueError, match="no word-region similarity, for text 1 of the batch"):
        LocalMatcher.words(TowerOutput(torch.zeros(2, 4), torch.zeros(2, 3, 4)), empty, tokenizer)


def test_punctuation_is_no_word_as_in_glorias_preprocessing() -> None:
    """GLoRIA's words are the report's lower-cased ``\\w+`` tokens (``create_path_2_sent_mapping``): section
    colons, full stops and brackets are not words the local term attends with."""
    report = "FINDINGS: Heart size is enlarged (mild). IMPRESSION: Cardiomegaly, no x-ray artefact."
    tokenizer = train_wordpiece([report] * 20, vocab_size=120)
    tokens = tokenizer([report], return_tensors="pt")
    pieces = tokenizer.convert_ids_to_tokens(tokens["input_ids"][0])
    membership = word_membership(tokens["input_ids"], tokens["attention_mask"], tokenizer)[0]
    words = ["".join(pieces[j].removeprefix("##") for j in row.nonzero().flatten().tolist()) for row in membership]
    assert words == re.findall(r"\w+", report.lower())


@pytest.mark.parametrize(("tower", "kwargs", "region_dim"), [("vit_tiny_patch16_224", {"depth": 1}, 192),
                                                             ("resnet18", {"regions_stage": -2}, 256)])
def test_objective_wires_the_encoders_tokens_into_both_terms(tower: str, kwargs: dict, region_dim: int) -> None:
    """The objective's terms equal the loss functions on the encoder's own outputs: global on its projections,
    local on words summed from the text tower's tokens and regions through the local embedder; both get
    gradients, samples without a report are left out. The regions are a ViT's patch tokens, or a ResNet's
    ``layer3`` cells (``regions_stage: -2``, GLoRIA's), not its last feature map."""
    torch.manual_seed(0)
    texts = ["small left pleural effusion", "no acute process", "mild cardiomegaly", "right pneumothorax", ""]
    cfg = ModelConfig(image_tower=TowerConfig(name=tower, kwargs=kwargs),
                      text_tower=TowerConfig(name="bert_small", kwargs={"hidden_size": 32, "layers": 1, "heads": 2}),
                      image_size=32, embed_dim=16)
    model = build_encoder(cfg, train_wordpiece(texts[:4] * 5, vocab_size=60)).eval()  # no dropout: comparable
    objective = GloriaObjective(model)
    batch = {"image": torch.randn(5, 1, 32, 32), "has_text": torch.tensor([True, True, True, True, False]),
             "text": texts, "index": torch.arange(5), "tokens": model.text_tower.tokenize(texts)}
    terms = objective(model, batch)
    terms["loss"].backward()

    with torch.no_grad():
        tokens = {k: v[:4] for k, v in batch["tokens"].items()}
        image_out, text_out = model.image_output(batch["image"][:4]), model.text_output(tokens)
        u = F.normalize(model.image_proj(image_out.pooled), dim=-1)
        w = F.normalize(model.text_proj(text_out.pooled), dim=-1)
        logits = T3 * u @ w.T
        target = torch.arange(4)
        global_term = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
        membership = word_membership(tokens["input_ids"], tokens["attention_mask"], model.text_tower.tokenizer)
        lengths = membership.any(-1).sum(1).tolist()
        cells = image_out.tokens if image_out.regions is None else image_out.regions
        regions = (cells @ objective.matcher.embedder.weight.T).double().numpy()
        words = (membership @ text_out.tokens).double().numpy()
    assert objective.matcher.embedder.in_features == region_dim == cells.shape[-1]
    assert torch.allclose(terms["global"], global_term, atol=1e-5)
    assert abs(float(terms["local"]) - _reference_local_loss(regions, words, lengths, True)) < 1e-4
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["global"] + terms["local"]), rel=1e-6)
    assert objective.matcher.embedder.weight.grad is not None and objective.matcher.embedder.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.text_tower.parameters() if p.requires_grad)
