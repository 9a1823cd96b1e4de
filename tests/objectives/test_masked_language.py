"""Masked language modelling: BERT's masking statistics, the loss against a loop-based float64 reference of the
prediction head, gradients into the tower's word embeddings, 2 gloo ranks against 1 process, and the refusal
of towers that cannot do it."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from radlab.models.text_towers import HFTextTower, bert_small
from radlab.models.tokenizer import train_wordpiece
from radlab.objectives.masked_language import (
    IGNORE,
    MaskedLanguageModelling,
    check_mlm_tower,
    mask_tokens,
)
from ranks import free_port, start_ranks

REPORTS = [
    "FINDINGS: No pneumothorax. The lungs are clear. Heart size is normal. IMPRESSION: Normal radiograph.",
    "FINDINGS: Moderate left pleural effusion. No consolidation. IMPRESSION: Moderate left effusion.",
    "Mild cardiomegaly. Small right pneumothorax. No edema.",
    "IMPRESSION: No acute cardiopulmonary process.",
    "Right lower lobe consolidation, likely pneumonia. Small effusion.",
    "Lines and tubes unchanged. Stable cardiomediastinal silhouette.",
    "Clear lungs.",
    "Bibasilar atelectasis. No focal consolidation or pneumothorax.",
]


def _tower(hidden: int = 8) -> HFTextTower:
    """A one-layer BERT (no dropout) on a WordPiece vocabulary of the reports, float64; the same weights on
    every call."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece(REPORTS, vocab_size=120)
    return bert_small(tokenizer, max_length=64, hidden_size=hidden, layers=1, heads=2, dropout=0.0).double()


def _mlm(tower: HFTextTower, mask_prob: float = 0.3) -> MaskedLanguageModelling:
    """The MLM with every head parameter randomised (LayerNorm and output bias included), so none is inert."""
    torch.manual_seed(1)
    mlm = MaskedLanguageModelling(tower, mask_prob).double()
    with torch.no_grad():
        for param in mlm.parameters():
            param.normal_(0.0, 0.5)
    return mlm


# --- masking ------------------------------------------------------------------------------------------------

def _synthetic_batch(rows: int = 1000, width: int = 40, vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] words [SEP] [PAD]... with ids 0-4 special ([PAD], [UNK], [CLS], [SEP], [MASK]) and some [UNK]
    among the words."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (rows, width), generator=g)
    ids[torch.rand(rows, width, generator=g) < 0.02] = 1
    lengths = torch.randint(3, width + 1, (rows,), generator=g)
    position = torch.arange(width)[None, :]
    ids[:, 0] = 2
    ids[position == lengths[:, None] - 1] = 3
    attention = (position < lengths[:, None]).long()
    return ids.masked_fill(attention == 0, 0), attention


def test_masking_picks_15_percent_of_the_real_words_and_splits_them_80_10_10() -> None:
    vocab, special = 300, [0, 1, 2, 3, 4]
    ids, attention = _synthetic_batch(vocab=vocab)

    def mask(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(ids, attention, 4, vocab, special, torch.Generator().manual_seed(seed), 0.15)

    masked, labels = mask(7)
    chosen = labels != IGNORE
    maskable = attention.bool() & (ids > 4)
    assert not (chosen & ~maskable).any()  # never [CLS], [SEP], [PAD], [UNK] or [MASK]
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    share = chosen.sum() / maskable.sum()
    to_mask = (masked == 4) & chosen
    to_random = (masked != 4) & (masked != ids) & chosen
    kept = (masked == ids) & chosen
    split = [float(x.sum() / chosen.sum()) for x in (to_mask, to_random, kept)]
    print(f"{int(maskable.sum())} maskable, {float(share):.4f} chosen; [MASK]/random/kept {split}")
    assert abs(float(share) - 0.15) < 0.01
    assert abs(split[0] - 0.8) < 0.03 and abs(split[1] - 0.1) < 0.025 and abs(split[2] - 0.1) < 0.025
    assert (masked[to_random] > 4).all() and (masked[to_random] < vocab).all()  # random words, never special
    again = mask(7)
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)
    other = mask(8)
    assert not torch.equal(other[1], labels)


def test_the_tokenizer_special_tokens_are_never_masked_and_empty_reports_contribute_nothing() -> None:
    tower = _tower()
    mlm = _mlm(tower, mask_prob=0.5)
    tokens = tower.tokenize(REPORTS + [""])  # the empty report is [CLS] [SEP] [PAD]...
    ids, attention = tokens["input_ids"], tokens["attention_mask"]
    masked, labels = mlm.mask(ids, attention, seed=3)
    chosen = labels != IGNORE
    special = torch.isin(ids, torch.tensor(tower.tokenizer.all_special_ids))
    assert special[:, 0].all() and (~attention.bool()).any()  # [CLS] at 0, and padding, are present
    assert chosen.any() and not (chosen & (special | ~attention.bool())).any()
    assert not chosen[-1].any()
    masked2, labels2 = mlm.mask(ids, attention, seed=3)
    assert torch.equal(masked, masked2) and torch.equal(labels, labels2)

    # Nothing masked anywhere: a zero that still reaches the head and the tower (the graph DDP needs).
    loss, accuracy = mlm.loss(tower, ids[-1:], attention[-1:], labels[-1:])
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(accuracy) == 0.0
    assert mlm.head.bias.grad is not None and not mlm.head.bias.grad.any()


# --- the loss against a loop reference ----------------------------------------------------------------------

def _gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _reference(tower: HFTextTower, mlm: MaskedLanguageModelling, masked: torch.Tensor, attention: torch.Tensor,
               labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the labelled positions, one position at a time in python floats:
    h -> dense -> GELU (erf) -> LayerNorm -> dot with every word-embedding row + bias."""
    with torch.no_grad():
        hidden = tower.model(input_ids=masked, attention_mask=attention).last_hidden_state.tolist()
    head = mlm.head
    w, c = head.dense.weight.tolist(), head.dense.bias.tolist()
    gamma, beta, eps = head.norm.weight.tolist(), head.norm.bias.tolist(), head.norm.eps
    table, bias = tower.model.get_input_embeddings().weight.tolist(), head.bias.tolist()
    losses, hits = [], []
    for i, j in (labels != IGNORE).nonzero().tolist():
        h = hidden[i][j]
        u = [_gelu(sum(a * b for a, b in zip(row, h, strict=True)) + cr) for row, cr in zip(w, c, strict=True)]
        mean = sum(u) / len(u)
        var = sum((x - mean) ** 2 for x in u) / len(u)
        v = [(x - mean) / math.sqrt(var + eps) * g + b for x, g, b in zip(u, gamma, beta, strict=True)]
        logits = [sum(a * b for a, b in zip(v, row, strict=True)) + bk for row, bk in zip(table, bias, strict=True)]
        target = int(labels[i, j])
        top = max(logits)
        losses.append(-(logits[target] - top - math.log(sum(math.exp(x - top) for x in logits))))
        hits.append(float(logits.index(top) == target))
    return sum(losses) / len(losses), sum(hits) / len(hits)


def test_loss_matches_a_loop_reference_and_reaches_the_word_embeddings_through_the_logits() -> None:
    tower = _tower()
    mlm = _mlm(tower)
    tokens = tower.tokenize(REPORTS)
    masked, labels = mlm.mask(tokens["input_ids"], tokens["attention_mask"], seed=5)
    loss, accuracy = mlm.loss(tower, masked, tokens["attention_mask"], labels)
    expected, expected_accuracy = _reference(tower, mlm, masked, tokens["attention_mask"], labels)
    assert (labels != IGNORE).sum() > 10
    assert abs(loss.item() - expected) < 1e-10 and float(accuracy) == pytest.approx(expected_accuracy, abs=1e-12)
    assert mlm(tower, tokens, seed=5)[0].item() == pytest.approx(loss.item(), abs=1e-12)  # mask + loss

    loss.backward()
    table = tower.model.get_input_embeddings().weight
    unseen = torch.ones(len(table), dtype=torch.bool)
    unseen[masked.unique()] = False  # rows no input looks up: their gradient comes through the logits alone
    assert unseen.sum() > 20 and (table.grad[unseen].abs().sum(1) > 0).all()
    for name, param in mlm.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # d loss / d bias = mean over masked tokens of softmax - one-hot
    with torch.no_grad():
        hidden = tower.model(input_ids=masked, attention_mask=tokens["attention_mask"]).last_hidden_state
        chosen = labels != IGNORE
        probs = mlm.head(hidden[chosen], table).softmax(-1)
        probs[torch.arange(len(probs)), labels[chosen]] -= 1
    torch.testing.assert_close(mlm.head.bias.grad, probs.mean(0), rtol=0, atol=1e-12)
    assert not any(p is table for p in mlm.parameters())  # read from the tower, not held
    assert all(t.shape != table.shape for t in mlm.state_dict().values())


# --- 2 gloo ranks against 1 process -------------------------------------------------------------------------

SPLIT = [3, 5]
CASES = ["uneven", "first_rank_unmasked"]


def _step(rows: slice, case: str) -> tuple[torch.Tensor, int]:
    """This rank's loss and accuracy shares and gradients (tower, head) on ``rows`` of one global masking."""
    tower = _tower()
    mlm = _mlm(tower, mask_prob=0.25)
    tokens = tower.tokenize(REPORTS)
    masked, labels = mlm.mask(tokens["input_ids"], tokens["attention_mask"], seed=11)
    if case == "first_rank_unmasked":
        labels[: SPLIT[0]] = IGNORE  # the first rank holds reports but no masked token
    loss, accuracy = mlm.loss(tower, masked[rows], tokens["attention_mask"][rows], labels[rows])
    loss.backward()
    params = list(tower.parameters()) + list(mlm.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    values = torch.cat([loss.detach().view(1), accuracy.view(1)] + [g.flatten() for g in grads])
    return values, int((labels[rows] != IGNORE).sum())


def _worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    values, count = _step(slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1])), case)
    dist.all_reduce(values)  # DDP's gradient averaging (and the logger's mean of the shares)
    torch.save({"values": values / world, "count": count}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("case", CASES)
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path, case: str) -> None:
    """Uneven ranks (3 + 5 reports, different masked-token counts, or none on the first): loss, accuracy and
    every gradient of the tower and head equal one process's over the whole batch."""
    start_ranks(_worker, (2, free_port(), str(tmp_path), case))
    single, total = _step(slice(0, sum(SPLIT)), case)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    counts = [r["count"] for r in ranks]
    assert sum(counts) == total and counts[0] != counts[1] and (counts[0] == 0) == (case != "uneven")
    for rank in ranks:
        torch.testing.assert_close(rank["values"], single, rtol=0, atol=1e-10)


# --- towers that cannot do it -------------------------------------------------------------------------------

class _Stand(nn.Module):
    def __init__(self, model: nn.Module | None, tokenizer: object) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer


def test_towers_without_a_hugging_face_model_or_mask_token_are_refused() -> None:
    tower = _tower()
    check_mlm_tower(tower)
    no_mask = copy.deepcopy(tower.tokenizer)
    no_mask.mask_token = None
    cases = {"tokenizer with a mask token": [_Stand(tower.model, no_mask), _Stand(tower.model, lambda t: t),
                                             None],
             "Hugging Face model": [_Stand(nn.Embedding(120, 8), tower.tokenizer)]}
    for message, towers in cases.items():
        for bad in towers:
            with pytest.raises(ValueError, match=message):
                MaskedLanguageModelling(bad)
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedLanguageModelling(tower, mask_prob=0.0)
