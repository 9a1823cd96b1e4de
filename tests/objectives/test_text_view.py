"""ConVIRT's and GLoRIA's text view: one sentence of each report per step (ConVIRT, Zhang et al. 2020, Sec. 2.2;
GLoRIA's released pre-training, ``full_report: false``), drawn reproducibly."""

from __future__ import annotations

import pytest
import torch

from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.tokenizer import train_wordpiece
from radlab.objectives.convirt import ConVIRTObjective
from radlab.objectives.gloria import GloriaObjective

REPORTS = ["FINDINGS: Heart size is enlarged. Small left pleural effusion. IMPRESSION: Cardiomegaly.",
           "No acute process.",
           "1. Lungs are clear. 2. No effusion.",
           ""]
SENTENCES = [["Heart size is enlarged.", "Small left pleural effusion.", "Cardiomegaly."],
             ["No acute process."],
             ["Lungs are clear.", "No effusion."]]


@pytest.mark.parametrize("method", ["convirt", "gloria"])
def test_the_text_tower_reads_one_sentence_of_each_report(method: str) -> None:
    """Every step the text tower gets one sentence per report with text, never a header, a list number or the
    whole report; a one-sentence report gives that sentence, and over steps a report's sentences vary."""
    cls, projection, pooling = {"convirt": (ConVIRTObjective, "mlp", "cls"),
                                "gloria": (GloriaObjective, "linear", "mean")}[method]
    tokenizer = train_wordpiece(REPORTS * 10, vocab_size=120)
    cfg = ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}),
                      text_tower=TowerConfig(name="bert_small", kwargs={"hidden_size": 32, "layers": 1, "heads": 2,
                                                                        "pooling": pooling}),
                      image_size=32, embed_dim=16, projection=projection)
    torch.manual_seed(0)
    model = build_encoder(cfg, tokenizer)
    objective = cls(model)
    seen: list[torch.Tensor] = []
    forward = model.text_tower.forward
    model.text_tower.forward = lambda ids, mask: (seen.append(ids), forward(ids, mask))[1]
    batch = {"image": torch.randn(4, 1, 32, 32), "has_text": torch.tensor([True, True, True, False]),
             "text": REPORTS, "index": torch.tensor([5, 6, 7, 8]), "tokens": model.text_tower.tokenize(REPORTS)}
    allowed = [{tuple(tokenizer(s)["input_ids"]) for s in sentences} for sentences in SENTENCES]
    drawn: list[set] = [set(), set(), set()]
    for _ in range(6):
        objective(model, batch)
        for k, ids in enumerate(seen.pop()):
            text = tuple(t for t in ids.tolist() if t != tokenizer.pad_token_id)
            assert text in allowed[k], (k, tokenizer.decode(text))
            drawn[k].add(text)
    assert len(drawn[0]) > 1 and len(drawn[1]) == 1


def test_draws_are_uniform_per_sample_and_repeat_from_the_saved_rng() -> None:
    """Uniform over a report's sentences; the draw of a sample depends on the step's seed (torch's global RNG,
    which training states save and restore) and its dataset row, not on its batch position or companions (so
    not on the rank that holds it)."""
    from radlab.objectives.report_text import check_text_view, report_sentences, sample_sentences

    assert report_sentences(REPORTS[0]) == SENTENCES[0] and report_sentences(REPORTS[2]) == SENTENCES[2]
    assert report_sentences(REPORTS[0], min_words=2) == SENTENCES[0][:2]  # GLoRIA's: no one-word sentence
    reports, rows = [REPORTS[0]] * 3000, list(range(3000))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = sample_sentences(reports, rows)
    shares = [first.count(s) / len(first) for s in SENTENCES[0]]
    assert all(0.3 < share < 0.37 for share in shares), shares
    torch.set_rng_state(state)
    assert sample_sentences(reports[1000:1100], rows[1000:1100]) == first[1000:1100]
    assert sample_sentences(reports[:100], rows[:100]) != first[:100]  # the next step draws anew
    assert sample_sentences(["No acute process", "..."], [0, 1]) == ["No acute process", "..."]
    with pytest.raises(ValueError, match="text_view must be one of"):
        check_text_view("words")
