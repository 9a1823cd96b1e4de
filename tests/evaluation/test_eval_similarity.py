"""Zero-shot and retrieval with GLoRIA's word-region similarity: the matcher survives the checkpoint, and the
tasks' scores are the local similarities of the images' regions and the texts' words as GLoRIA evaluates them
(the best word's, ``local``) or their average with the cosine (``both``)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from radlab.data.records import RecordTable
from radlab.evaluation.context import EvalContext, TaskSkipped
from radlab.evaluation.crossmodal import distinct_texts, retrieval, study_ids, study_index
from radlab.evaluation.features import FeatureCache, image_batches
from radlab.evaluation.metrics import recall_at_k
from radlab.evaluation.prompts import prompts
from radlab.evaluation.retrieval import correct_key_positions, membership
from radlab.evaluation.similarity import combine, decision_scores
from radlab.evaluation.zero_shot import exclusive_accuracy, prompt_scores, single_label
from radlab.models.checkpoint import load_encoder_checkpoint, save_encoder
from radlab.models.encoder import RadEncoder
from radlab.models.local_matching import local_similarity
from radlab.objectives.gloria import GloriaObjective


def test_combine_hand_computed() -> None:
    g = np.array([[1.0, 0.0], [3.0, 0.0]])
    z = np.array([[10.0, 2.0], [20.0, 6.0]])
    assert np.allclose(combine(g, z, "both"), [[5.5, 1.0], [11.5, 3.0]])  # GLoRIA's plain mean
    assert combine(g, z, "global") is g and combine(g, z, "local") is z


def test_both_standardises_each_class_over_the_images_before_top1_as_gloria() -> None:
    """GLoRIA's zero_shot_classification: (s - s.mean(axis=0)) / s.std(axis=0), then argmax over classes."""
    scores = np.array([[0.9, 0.2], [0.8, 0.1], [0.7, 0.3]])
    standardised = (scores - scores.mean(axis=0)) / scores.std(axis=0)
    assert np.allclose(decision_scores(scores, "both"), standardised)
    assert scores.argmax(1).tolist() == [0, 0, 0] and standardised.argmax(1).tolist() == [0, 0, 1]
    assert decision_scores(scores, "global") is scores and decision_scores(scores, "local") is scores
    labels = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
    assert single_label(labels, scores)["accuracy"] == pytest.approx(2 / 3)
    assert single_label(labels, scores, "both")["accuracy"] == 1.0


def test_exclusive_accuracy_standardises_over_the_drawn_images(gloria_encoder: RadEncoder,
                                                               split_table: RecordTable) -> None:
    ctx = _context(gloria_encoder, split_table, "zero_shot", "both")
    names = ["cardiomegaly", "pleural_effusion"]
    labels = ctx.labels("test")[:, [ctx.label_names.index(n) for n in names]]
    scores = 0.5 * (labels == 1) + np.array([3.0, 0.0])  # raw, class 0 always wins; per class, the positives stand out
    raw, both = (exclusive_accuracy(ctx, names, labels, scores, kind) for kind in ("global", "both"))
    assert raw["n"] == both["n"] > 0 and min(raw["n_per_class"]) > 0
    assert raw["accuracy"] == pytest.approx(raw["n_per_class"][0] / raw["n"]) and both["accuracy"] == 1.0


def test_gloria_evaluation_scores_a_report_by_its_best_word() -> None:
    """GLoRIA's get_local_similarities: log max_i exp(τ2 cos_i), against its loss's log sum_i exp(τ2 cos_i)."""
    torch.manual_seed(0)
    regions, words = torch.randn(3, 5, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    best = local_similarity(regions, words, mask, 4.0, 5.0, word_softmax=False, over_words="max")
    total = local_similarity(regions, words, mask, 4.0, 5.0, word_softmax=False)
    assert (best < total).all()
    for i in range(3):  # without the softmax over words, each word attends on its own: score them one by one
        for t in range(2):
            one = [local_similarity(regions[i:i + 1], words[t:t + 1, w:w + 1], mask[t:t + 1, w:w + 1], 4.0, 5.0,
                                    word_softmax=False, over_words="max") for w in range(int(mask[t].sum()))]
            assert float(best[i, t]) == pytest.approx(max(float(s) for s in one), abs=1e-5)


@pytest.fixture(scope="module")
def gloria_encoder(tiny_encoder: RadEncoder, tiny_tower_spec: dict,
                   tmp_path_factory: pytest.TempPathFactory) -> RadEncoder:
    """The tiny encoder with a GLoRIA matcher (random embedder, temperatures off the defaults), through a
    checkpoint folder and back."""
    model = copy.deepcopy(tiny_encoder)
    torch.manual_seed(1)
    GloriaObjective(model, temp_attention=3.0, temp_words=6.0, word_softmax=False).attach(model)
    folder = save_encoder(model, tmp_path_factory.mktemp("gloria") / "checkpoint", tiny_tower_spec)
    loaded = load_encoder_checkpoint(folder)
    assert loaded.local_match.spec() == model.local_match.spec()
    assert torch.equal(loaded.local_match.embedder.weight, model.local_match.embedder.weight)
    return loaded


def _context(encoder: RadEncoder, table: RecordTable, task: str, similarity: str) -> EvalContext:
    return EvalContext(encoder, table, ["cardiomegaly", "pleural_effusion"], features=FeatureCache(), task=task,
                       options={task: {"similarity": similarity}}, n_boot=10)


@torch.no_grad()
def _local_reference(encoder: RadEncoder, table: RecordTable, rows: np.ndarray, texts: list[str]) -> np.ndarray:
    """Z of every image against every text, all texts in one batch, straight from the towers."""
    m, tower = encoder.local_match, encoder.text_tower
    tokens = tower.tokenize(texts)
    words, mask = m.words(encoder.text_output(tokens), tokens, tower.tokenizer)
    batches = image_batches(encoder, table.subset(rows), 64, "")
    regions = torch.cat([m.regions(encoder.image_output(x)) for x in batches])
    return local_similarity(regions, words, mask, m.temp_attention, m.temp_words, m.word_softmax,
                            over_words="max").numpy()


def test_zero_shot_local_and_both_score_with_the_matcher(gloria_encoder: RadEncoder, split_table: RecordTable) -> None:
    names = ["cardiomegaly", "pleural_effusion"]
    ctx = _context(gloria_encoder, split_table, "zero_shot", "local")
    texts = [t for name in names for pair in prompts(name, "descriptions") for t in pair]
    local = _local_reference(gloria_encoder, split_table, ctx.rows("test"), texts).reshape(-1, 2, 2)
    binary, per_class = prompt_scores(ctx, names, "descriptions")
    assert np.allclose(binary, local[..., 0] - local[..., 1], atol=1e-4)
    assert np.allclose(per_class, local[..., 0], atol=1e-4)

    cosine = _context(gloria_encoder, split_table, "zero_shot", "global")
    g_binary, g_class = prompt_scores(cosine, names, "descriptions")
    cos = np.stack([g_class, g_class - g_binary], -1)  # positive and negative cosines
    both = combine(cos, local, "both")
    b_binary, _ = prompt_scores(_context(gloria_encoder, split_table, "zero_shot", "both"), names, "descriptions")
    assert np.allclose(b_binary, both[..., 0] - both[..., 1], atol=1e-4)
    assert not np.allclose(b_binary, g_binary) and not np.allclose(b_binary, binary)


def test_retrieval_local_ranks_reports_by_word_region_similarity(gloria_encoder: RadEncoder,
                                                                  split_table: RecordTable) -> None:
    ctx = _context(gloria_encoder, split_table, "retrieval", "local")
    out = retrieval(ctx)
    rows = ctx.rows("test")
    rows = rows[np.array([bool(r.strip()) for r in np.array(split_table.texts(), dtype=object)[rows]])]
    first, image_study = study_index(study_ids(ctx, rows))
    reports, contains = distinct_texts([[str(split_table.texts()[r])] for r in rows[first]])
    scores = _local_reference(gloria_encoder, split_table, rows, reports)
    relevant = membership(image_study, len(first)) @ contains
    above, tied, correct = correct_key_positions(np.zeros((len(rows), 1)), np.zeros((len(reports), 1)), relevant,
                                                 scores=scores)
    expected = recall_at_k(above, tied, tied_correct=correct)
    found = out["report"]["image_to_text"]
    assert out["similarity"] == "local" and {k: found[k] for k in expected} == pytest.approx(expected)
    cosine = retrieval(_context(gloria_encoder, split_table, "retrieval", "global"))["report"]["image_to_text"]
    assert {k: cosine[k] for k in expected} != pytest.approx(expected)  # the option changes the ranking
    assert out["report"]["text_to_image"]["n_queries"] == len(reports) and "sentence" in out


def test_similarity_option_is_checked(tiny_encoder: RadEncoder, split_table: RecordTable) -> None:
    with pytest.raises(TaskSkipped, match="word-region matcher"):
        prompt_scores(_context(tiny_encoder, split_table, "zero_shot", "both"), ["cardiomegaly"], "names")
    with pytest.raises(ValueError, match="similarity must be one of"):
        retrieval(_context(tiny_encoder, split_table, "retrieval", "regions"))


def test_local_scores_are_cached_with_their_texts(gloria_encoder: RadEncoder, split_table: RecordTable,
                                                  tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    rows = np.flatnonzero((split_table.frame["split"] == "test").to_numpy())[:6]
    first = cache.local(gloria_encoder, split_table, rows, ["FINDINGS: cardiomegaly."])
    again = FeatureCache(tmp_path).local(gloria_encoder, split_table, rows, ["FINDINGS: cardiomegaly."])
    other = cache.local(gloria_encoder, split_table, rows, ["FINDINGS: no cardiomegaly."])
    assert first.shape == (6, 1) and np.array_equal(first, again) and cache.extractions == 2
    assert not np.allclose(first, other)
