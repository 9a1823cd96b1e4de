"""DeCLIP: every term against a loop-based float64 reference (nearest neighbours from a pre-filled queue
included), the FIFO queue, the report augmentation, the masked-language term (TSS; its loss against a loop
reference and on 2 ranks in test_masked_language.py) in the objective, 2 gloo ranks against 1 process, and
training through the engine on phantoms."""

from __future__ import annotations

import copy
import math
import random
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from radlab.models.encoder import RadEncoder
from radlab.models.local_matching import word_membership
from radlab.models.text_towers import bert_small
from radlab.models.tokenizer import train_wordpiece
from radlab.models.towers import TowerOutput
from radlab.objectives.base import step_seed
from radlab.objectives.declip import DeCLIPObjective, augment_reports, report_sections
from radlab.objectives.gloria import local_loss
from radlab.objectives.masked_language import IGNORE
from ranks import free_port, start_ranks
from run_logs import logged

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
REPORTS = [
    "FINDINGS: No pneumothorax. The lungs are clear. Heart size is normal. IMPRESSION: Normal radiograph.",
    "FINDINGS: Moderate left pleural effusion. No consolidation. IMPRESSION: Moderate left effusion.",
    "",  # no report: image self-supervision only
    "Mild cardiomegaly. Small right pneumothorax. No edema.",
    "IMPRESSION: No acute cardiopulmonary process.",  # one sentence
]


# --- a stand-in encoder: images are pooled features; a text embeds as the sum of fixed word vectors -----

class _WordTower:
    def __init__(self, dim: int) -> None:
        self.dim, self.calls = dim, []

    def vector(self, text: str) -> torch.Tensor:
        words = re.findall(r"[a-z]+", text.lower())
        gens = [torch.Generator().manual_seed(zlib.crc32(w.encode())) for w in words]
        return sum((torch.randn(self.dim, generator=g, dtype=torch.float64) for g in gens),
                   torch.zeros(self.dim, dtype=torch.float64))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        self.calls.append(list(texts))
        return {"features": torch.stack([self.vector(t) for t in texts])}


class _FeatureEncoder(nn.Module):
    def __init__(self, image_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False).double()
        self.text_proj = nn.Identity()
        self.text_tower = _WordTower(embed_dim)

    def image_output(self, images: torch.Tensor) -> TowerOutput:
        return TowerOutput(images, images[:, None])

    def project_image(self, out: TowerOutput) -> torch.Tensor:
        return self.image_proj(out.pooled)

    def text_output(self, tokens: dict[str, torch.Tensor]) -> TowerOutput:
        return TowerOutput(tokens["features"], tokens["features"][:, None])

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.text_output(tokens).pooled, dim=-1)


def _batch(model: _FeatureEncoder, n: int, dim: int, seed: int, reports: list[str] = REPORTS) -> dict:
    g = torch.Generator().manual_seed(seed)
    texts = [reports[i % len(reports)] for i in range(n)]
    return {"image": [torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(2)],
            "text": texts, "has_text": torch.tensor([bool(t) for t in texts]),
            "index": torch.arange(n) + 10 * seed, "study": torch.arange(n) + 10 * seed,
            "tokens": model.text_tower.tokenize(texts)}


# --- loop references (python floats) ---------------------------------------------------------------------

def _unit(rows: list[list[float]]) -> list[list[float]]:
    return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _ce(logits: list[float], target: int) -> float:
    top = max(logits)
    return -(logits[target] - top - math.log(sum(math.exp(v - top) for v in logits)))


def _info_nce(u: list, v: list, s: float, both: bool = True) -> float:
    """1/N sum_i of [½ (u_i->v) + ½ (v_i->u)] (symmetric) or (u_i->v) (image to text only)."""
    n = len(u)
    i2t = [_ce([s * _dot(u[i], v[j]) for j in range(n)], i) for i in range(n)]
    if not both:
        return sum(i2t) / n
    t2i = [_ce([s * _dot(v[i], u[j]) for j in range(n)], i) for i in range(n)]
    return sum(0.5 * (a + b) for a, b in zip(i2t, t2i, strict=True)) / n


def _nt_xent(z1: list, z2: list, tau: float) -> float:
    z, n = _unit(z1 + z2), len(z1)
    total = 0.0
    for k in range(2 * n):
        others = [m for m in range(2 * n) if m != k]
        logits = [_dot(z[k], z[m]) / tau for m in others]
        total += _ce(logits, others.index((k + n) % (2 * n)))
    return total / (2 * n)


def _nearest_slot(query: list[float], record: int, queue: list, queue_ids: list[int]) -> int:
    best, best_cos = -1, -math.inf
    for slot, (entry, rid) in enumerate(zip(queue, queue_ids, strict=True)):
        cos = _dot(query, entry) / math.sqrt(_dot(entry, entry))
        if rid != record and cos > best_cos:
            best, best_cos = slot, cos
    return best


def test_terms_match_a_loop_reference_with_a_prefilled_queue() -> None:
    """Four-pair MVS (the CLIP pair among them), NT-Xent through the BN projection over all images, and
    image -> nearest-neighbour InfoNCE with the queue's nearest entry from another record, in float64."""
    torch.manual_seed(0)
    d_img, d, n, size = 6, 4, 5, 9
    model = _FeatureEncoder(d_img, d)
    objective = DeCLIPObjective(embed_dim=d, image_dim=d_img, queue_size=size, proj_dim=3, hidden_dim=5,
                                iss_weight=0.3, nns_weight=0.25, iss_temperature=0.5, sentence_drop=0.4,
                                tss_weight=0.0)
    objective = objective.double()
    with torch.no_grad():
        objective.logit_scale.log_scale.fill_(math.log(3.0))
    batch = _batch(model, n, d_img, 1)
    keep = batch["has_text"].tolist()
    texts = [t for t, k in zip(batch["text"], keep, strict=True) if k]
    ids = [int(i) for i, k in zip(batch["study"], keep, strict=True) if k]
    t = [F.normalize(model.text_tower.vector(x), dim=0).tolist() for x in texts]
    # A full queue whose best match for the first report is that report itself (same study: excluded).
    g = torch.Generator().manual_seed(5)
    queue = F.normalize(torch.randn(size, d, generator=g, dtype=torch.float64), dim=-1)
    queue[2] = torch.tensor(t[0], dtype=torch.float64)
    queue_ids = [100, 101, ids[0], 103, ids[1], 105, 106, 107, ids[2]]
    objective.push(queue, torch.tensor(queue_ids))
    before = copy.deepcopy(objective)

    terms = objective.train()(model, batch)
    augmented = model.text_tower.calls[-1]
    assert len(augmented) == len(texts) and augmented != texts  # the second view changed some report
    t_aug = [F.normalize(model.text_tower.vector(x), dim=0).tolist() for x in augmented]

    s = 3.0
    w = model.image_proj.weight.detach().tolist()
    pooled = [r.tolist() for r in torch.cat(batch["image"])]
    x = _unit([[_dot(row, wr) for wr in w] for row in pooled])
    x1 = [x[i] for i in range(n) if keep[i]]
    x2 = [x[n + i] for i in range(n) if keep[i]]
    pairs = [_info_nce(a, b, s) for b in (t, t_aug) for a in (x1, x2)]
    clip, mvs = pairs[0], sum(pairs) / 4
    # ISS: Linear -> BatchNorm (batch statistics over both views, biased variance) -> ReLU -> Linear.
    lin1, bn, lin2 = objective.projection[0], objective.projection[1], objective.projection[3]
    hidden = [[_dot(row, wr) + b for wr, b in zip(lin1.weight.tolist(), lin1.bias.tolist(), strict=True)]
              for row in pooled]
    mean = [sum(col) / len(col) for col in zip(*hidden, strict=True)]
    columns = list(zip(*hidden, strict=True))
    var = [sum((v - m) ** 2 for v in col) / len(col) for col, m in zip(columns, mean, strict=True)]
    hidden = [[max(0.0, (v - m) / math.sqrt(vv + bn.eps) * gm + bt)
               for v, m, vv, gm, bt in zip(row, mean, var, bn.weight.tolist(), bn.bias.tolist(), strict=True)]
              for row in hidden]
    z = [[_dot(row, wr) + b for wr, b in zip(lin2.weight.tolist(), lin2.bias.tolist(), strict=True)]
         for row in hidden]
    iss = _nt_xent(z[:n], z[n:], 0.5)
    # NNS: each report view's nearest queue entry from another record; images against those, one direction.
    q = queue.tolist()
    slots = [[_nearest_slot(row, rid, q, queue_ids) for row, rid in zip(view, ids, strict=True)]
             for view in (t, t_aug)]
    assert slots[0][0] != 2  # the report's own, identical entry was skipped
    for view, expected in zip((t, t_aug), slots, strict=True):
        chosen = before.nearest(torch.tensor(view, dtype=torch.float64), torch.tensor(ids))[1]
        assert chosen.tolist() == expected
    nns = sum(_info_nce(a, [q[k] for k in view], s, both=False) for view in slots for a in (x1, x2)) / 4
    total = (1 - 0.3 - 0.25) * mvs + 0.3 * iss + 0.25 * nns

    for name, expected in {"clip": clip, "mvs": mvs, "iss": iss, "nns": nns, "loss": total}.items():
        got = float(terms[name].detach())
        assert abs(got - expected) < 1e-10, (name, got, expected)
    assert float(terms["logit_scale"]) == pytest.approx(3.0)
    # this step's report views were pushed after the lookups: t then t', over the oldest entries (slots 0-7)
    pushed = torch.tensor(t + t_aug, dtype=torch.float64)
    order = torch.arange(len(pushed))
    torch.testing.assert_close(objective.queue[order], pushed, rtol=0, atol=1e-12)
    assert objective.queue_study[order].tolist() == ids + ids


def test_queue_is_a_checkpointed_fifo_and_nns_waits_until_it_is_full() -> None:
    objective = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    rows = torch.arange(28, dtype=torch.float32).view(14, 2)

    def push(first: int, count: int) -> None:
        objective.push(rows[first: first + count], torch.arange(first, first + count))

    push(0, 3)
    assert (int(objective.queue_filled), int(objective.queue_ptr)) == (3, 3)
    assert objective.queue_study.tolist() == [0, 1, 2, -1, -1]
    push(3, 4)  # wraps around, overwriting the oldest (0, 1)
    assert (int(objective.queue_filled), int(objective.queue_ptr)) == (5, 2)
    assert objective.queue_study.tolist() == [5, 6, 2, 3, 4]
    push(7, 7)  # more than the queue holds: the last five survive, in order from the pointer
    assert (int(objective.queue_filled), int(objective.queue_ptr)) == (5, 4)
    assert objective.queue_study.roll(-int(objective.queue_ptr)).tolist() == [9, 10, 11, 12, 13]
    torch.testing.assert_close(objective.queue.roll(-4, 0), rows[9:14])

    state = objective.state_dict()
    assert {"queue", "queue_study", "queue_ptr", "queue_filled"} <= state.keys()
    restored = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    restored.load_state_dict(state)
    assert torch.equal(restored.queue, objective.queue) and int(restored.queue_ptr) == 4

    # Through forward: NNS is a zero that keeps the graph until the queue is full, then live.
    torch.manual_seed(0)
    model = _FeatureEncoder(6, 4)
    objective = DeCLIPObjective(embed_dim=4, image_dim=6, queue_size=10, proj_dim=3, hidden_dim=5,
                                tss_weight=0.0).double()
    first = objective(model, _batch(model, 6, 6, 1))  # 5 reports x 2 views: 10 of 10 after this step
    assert float(first["nns"]) == 0.0 and float(first["queue_fill"]) == 1.0
    first["loss"].backward()
    assert model.image_proj.weight.grad is not None
    queued = objective.queue_study.clone()
    objective.eval()
    assert float(objective(model, _batch(model, 6, 6, 2))["nns"]) > 0
    assert torch.equal(objective.queue_study, queued)  # evaluation looks up but does not push
    second = objective.train()(model, _batch(model, 6, 6, 3))
    assert float(second["nns"]) > 0
    objective.zero_grad()
    second["loss"].backward()
    assert objective.logit_scale.log_scale.grad is not None


def test_a_state_with_the_older_record_numbered_queue_loads_with_the_queue_emptied(
        caplog: pytest.LogCaptureFixture) -> None:
    saved = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    saved.push(torch.ones(5, 2), torch.arange(5))
    state = saved.state_dict()
    state["queue_index"] = state.pop("queue_study")  # as radlab before study numbers saved it
    restored = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    with caplog.at_level("WARNING", logger="radlab.objectives.declip"):
        restored.load_state_dict(state)
    assert "queue starts empty" in caplog.text
    assert int(restored.queue_filled) == 0 and int(restored.queue_ptr) == 0 and (restored.queue_study == -1).all()
    torch.testing.assert_close(restored.projection[0].weight, saved.projection[0].weight)  # the rest as saved


def test_a_new_run_from_a_checkpoint_starts_an_empty_queue() -> None:
    """init_from (``restart``): the saved queue holds the old run's embeddings under its study numbers."""
    saved = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    saved.push(torch.ones(5, 2), torch.arange(5))
    restored = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=5, tss_weight=0.0)
    restored.load_state_dict(saved.state_dict())
    restored.restart()
    assert int(restored.queue_filled) == 0 and int(restored.queue_ptr) == 0 and (restored.queue_study == -1).all()
    assert not restored.queue.any()
    torch.testing.assert_close(restored.projection[0].weight, saved.projection[0].weight)


def test_report_augmentation_is_seeded_keeps_a_sentence_and_changes_multi_sentence_reports() -> None:
    multi = [r for r in REPORTS if sum(len(s) for _, s in report_sections(r)) > 1]
    single = ["No acute cardiopulmonary process.", "IMPRESSION: Normal chest radiograph.", "Clear lungs"]
    torch.manual_seed(7)
    random.seed(1)
    first = augment_reports(multi * 4, 0.2, 0.5)
    torch.manual_seed(7)
    random.seed(2)  # python's global RNG plays no part
    assert augment_reports(multi * 4, 0.2, 0.5) == first
    assert augment_reports(multi * 4, 0.2, 0.5) != first  # the next draw differs
    assert any(out != r for out, r in zip(first, multi * 4, strict=True))
    for report in multi:  # every multi-sentence report changes within a few draws
        assert any(augment_reports([report], 0.2, 0.5)[0] != report for _ in range(8)), report
    for out, report in zip(augment_reports(multi * 25, 0.9, 1.0), multi * 25, strict=True):
        original = dict(report_sections(report))
        sections = [(h, s) for h, s in report_sections(out) if s]
        assert sections, out  # at least one sentence kept
        for header, sentences in sections:  # each sentence once, under its own header, headers in order
            assert len(set(sentences)) == len(sentences) and set(sentences) <= set(original[header])
        headers = [h for h, _ in sections]
        assert headers == [h for h, _ in report_sections(report) if h in headers]
    assert augment_reports(single * 10, 0.9, 1.0) == single * 10


# --- text self-supervision (masked language model) -------------------------------------------------------

class _PooledImages(nn.Module):
    """An image tower whose pooled features are the input rows."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed_dim = dim

    def forward(self, images: torch.Tensor) -> TowerOutput:
        return TowerOutput(images, images[:, None])


def _bert_encoder(d_img: int = 6, d: int = 4) -> RadEncoder:
    """A ``RadEncoder`` with a one-layer BERT (no dropout) on a vocabulary of the reports, float64."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece([r for r in REPORTS if r], vocab_size=100)
    tower = bert_small(tokenizer, max_length=64, hidden_size=8, layers=1, heads=2, dropout=0.0)
    return RadEncoder(_PooledImages(d_img), tower, embed_dim=d).double()


def _declip(model: RadEncoder, **kwargs: float) -> DeCLIPObjective:
    """The same projection and scale whatever the TSS settings; a queue the first batch fills."""
    torch.manual_seed(1)
    return DeCLIPObjective(embed_dim=4, image_dim=6, queue_size=8, proj_dim=3, hidden_dim=5, model=model,
                           **kwargs).double()


def test_tss_off_is_the_loss_before_it_and_on_adds_its_weighted_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tss_weight`` 0: no head, no extra random draw, the total (1 - α - γ) MVS + α ISS + γ NNS bit for bit.
    On (the defaults): the other terms unchanged, "tss" the MLM loss of the seeded masking of the reports t
    (the rows with text), and the total 0.4 MVS + 0.2 (ISS + TSS + NNS)."""
    model = _bert_encoder()
    off, on = _declip(model, tss_weight=0.0), _declip(model)
    assert off.mlm is None and not any(key.startswith("mlm.") for key in off.state_dict())
    assert any(key.startswith("mlm.head.") for key in on.state_dict())
    assert (off.mvs_weight, on.mvs_weight) == (pytest.approx(0.6), pytest.approx(0.4))
    for objective in (off, on):  # fills the queue: NNS is live in the step under test
        torch.manual_seed(5)
        objective(model, _batch(model, 6, 6, 1))
    batch = _batch(model, 6, 6, 2)

    torch.manual_seed(9)
    got_off = off(model, batch)
    after_off = torch.get_rng_state()
    torch.manual_seed(9)
    step_seed()  # the report views' draw
    assert torch.equal(after_off, torch.get_rng_state())  # TSS off draws nothing more than before it existed
    mask_seed = step_seed()  # TSS on seeds its masks with the next draw
    before = (1 - 0.2 - 0.2) * got_off["mvs"] + 0.2 * got_off["iss"] + 0.2 * got_off["nns"]
    assert float(got_off["nns"]) > 0 and "tss" not in got_off and "mlm_accuracy" not in got_off
    assert got_off["loss"].item() == before.item()

    calls = []

    def spy(ids: torch.Tensor, attention: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((ids, attention, seed, *mask(ids, attention, seed)))
        return calls[-1][3:]

    mask = on.mlm.mask
    monkeypatch.setattr(on.mlm, "mask", spy)
    torch.manual_seed(9)
    got_on = on(model, batch)
    for key in ("clip", "mvs", "iss", "nns", "logit_scale"):
        assert torch.equal(got_on[key], got_off[key]), key
    (ids, attention, seed, masked, labels), = calls
    keep = batch["has_text"]
    assert seed == mask_seed and torch.equal(ids, batch["tokens"]["input_ids"][keep])
    chosen = labels != IGNORE
    assert chosen.any() and (masked[chosen] != ids[chosen]).any()
    with torch.no_grad():
        tss, accuracy = on.mlm.loss(model.text_tower, masked, attention, labels)
    assert got_on["tss"].item() == pytest.approx(tss.item(), abs=1e-12) and got_on["tss"] > 0
    assert got_on["mlm_accuracy"].item() == pytest.approx(accuracy.item(), abs=1e-12)
    total = 0.4 * got_on["mvs"] + 0.2 * (got_on["iss"] + got_on["tss"] + got_on["nns"])
    assert got_on["loss"].item() == pytest.approx(total.item(), abs=1e-12)
    torch.manual_seed(9)
    assert torch.equal(on(model, batch)["tss"], got_on["tss"])  # the same seed masks the same tokens

    # Gradients: word-embedding rows no input looks up move only through the MLM logits, so only with TSS on.
    table = model.text_tower.model.get_input_embeddings().weight
    unseen = torch.ones(len(table), dtype=torch.bool)
    unseen[torch.cat([batch["tokens"]["input_ids"].flatten(), masked.flatten()]).unique()] = False
    assert unseen.sum() > 10
    for objective, terms in ((off, got_off), (on, got_on)):
        model.zero_grad()
        objective.zero_grad()
        terms["loss"].backward()
        moved = table.grad[unseen].abs().sum(1) > 0
        assert moved.all() if objective is on else not moved.any()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on.mlm.parameters())


def test_tss_refuses_text_towers_that_cannot_do_masked_language_modelling() -> None:
    with pytest.raises(ValueError, match="needs the model"):
        DeCLIPObjective(embed_dim=4, image_dim=6)
    stand_in = _FeatureEncoder(6, 4)  # a text tower without a Hugging Face tokenizer or model
    with pytest.raises(ValueError, match="Hugging Face tokenizer with a mask token"):
        DeCLIPObjective(embed_dim=4, image_dim=6, model=stand_in)
    assert DeCLIPObjective(embed_dim=4, image_dim=6, model=stand_in, tss_weight=0.0).mlm is None
    for weights in ({"tss_weight": -0.1}, {"iss_weight": 0.3, "tss_weight": 0.4, "nns_weight": 0.3}):
        with pytest.raises(ValueError, match="sum < 1"):
            DeCLIPObjective(embed_dim=4, image_dim=6, model=_bert_encoder(), **weights)


# --- GLoRIA's local term (the low-data study's combination) ------------------------------------------------

def test_local_term_is_glorias_on_the_first_view_and_the_reports() -> None:
    """``local_weight`` λ: every other term as without it, "local" GLoRIA's ``local_loss`` on the first view's
    regions through the matcher and the reports' words, the total λ more; the matcher learns and becomes the
    encoder's."""
    model = _bert_encoder()
    off, on = _declip(model, tss_weight=0.0), _declip(model, tss_weight=0.0, local_weight=0.5)
    assert off.matcher is None and on.matcher.spec()["temp_attention"] == 4.0
    batch = _batch(model, 6, 6, 3)
    torch.manual_seed(9)
    got_off = off(model, batch)
    torch.manual_seed(9)
    got_on = on(model, batch)
    for key in ("clip", "mvs", "iss", "nns"):
        assert torch.equal(got_on[key], got_off[key]), key
    keep = batch["has_text"]
    tokens = {k: v[keep] for k, v in batch["tokens"].items()}
    with torch.no_grad():
        regions = on.matcher.embedder(batch["image"][0][keep][:, None])  # _PooledImages: one region per image
        membership = word_membership(tokens["input_ids"], tokens["attention_mask"], model.text_tower.tokenizer)
        words = membership.double() @ model.text_output(tokens).tokens
        expected = local_loss(regions, words, membership.any(-1), 4.0, 5.0, 10.0)
    assert got_on["local"].item() == pytest.approx(expected.item(), abs=1e-12)
    assert got_on["loss"].item() == pytest.approx((got_off["loss"] + 0.5 * got_on["local"]).item(), abs=1e-12)
    got_on["loss"].backward()
    assert on.matcher.embedder.weight.grad.abs().sum() > 0
    on.attach(model)
    assert model.local_match is on.matcher
    with pytest.raises(ValueError, match="Hugging Face tokenizer"):
        DeCLIPObjective(embed_dim=4, image_dim=6, model=_FeatureEncoder(6, 4), tss_weight=0.0, local_weight=1.0)


# --- 2 gloo ranks against 1 process ----------------------------------------------------------------------

N, D_IN, D, SIZE = 8, 6, 5, 12
# which samples have a report: 2 + 4 over the ranks, or none on the first rank
HAS_TEXT = {"uneven": [True, True, False, True, True, True, False, True],
            "first_rank_none": [False, False, False, True, True, True, False, True]}
SPLIT = [3, 5]


def _setup() -> tuple[dict, dict, DeCLIPObjective]:
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(N, D_IN, generator=g, dtype=torch.float64) for k in ("x1", "x2", "t", "t_aug")}
    params = {k: torch.randn(D_IN, D, generator=g, dtype=torch.float64).requires_grad_()
              for k in ("w_image", "w_text", "w_iss")}
    objective = DeCLIPObjective(embed_dim=D, image_dim=D_IN, queue_size=SIZE, tss_weight=0.0).double()
    queue = F.normalize(torch.randn(SIZE, D, generator=g, dtype=torch.float64), dim=-1)
    objective.push(queue, torch.arange(SIZE) % 9)  # ids 0-2 twice: entries of this batch's records
    return data, params, objective


def _step(rows: slice, has_text: str) -> tuple[torch.Tensor, DeCLIPObjective]:
    data, p, objective = _setup()
    keep = torch.tensor(HAS_TEXT[has_text])[rows]
    image = tuple(F.normalize(data[k][rows][keep] @ p["w_image"], dim=-1) for k in ("x1", "x2"))
    text = tuple(F.normalize(data[k][rows][keep] @ p["w_text"], dim=-1) for k in ("t", "t_aug"))
    iss = tuple(data[k][rows] @ p["w_iss"] for k in ("x1", "x2"))
    terms = objective.terms(image, text, iss, torch.arange(N)[rows][keep])
    assert float(terms["nns"]) > 0 or not keep.any()  # a rank without reports holds no share of it
    terms["loss"].backward()
    grads = [p[k].grad for k in sorted(p)] + [objective.logit_scale.log_scale.grad]
    return torch.cat([terms["loss"].detach().flatten()] + [v.flatten() for v in grads]), objective


def _worker(rank: int, world: int, port: int, out: str, has_text: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    values, objective = _step(slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1])), has_text)
    dist.all_reduce(values)  # what DDP does with the gradients (and the logger with the loss): the mean
    torch.save({"values": values / world, "queue": objective.state_dict()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("has_text", list(HAS_TEXT))
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path, has_text: str) -> None:
    """Uneven ranks (3 + 5 samples; 2 + 4 with text, or 0 + 4): loss and gradients (projections, ISS head,
    scale) and the queue after the step (gathered pushes, in global order) equal one process's."""
    start_ranks(_worker, (2, free_port(), str(tmp_path), has_text))
    single, objective = _step(slice(0, N), has_text)
    for r in range(2):
        rank = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(rank["values"], single, rtol=0, atol=1e-9)
        for key in ("queue", "queue_study", "queue_ptr", "queue_filled"):
            torch.testing.assert_close(rank["queue"][key], objective.state_dict()[key], rtol=0, atol=1e-12)


# --- training through the engine ---------------------------------------------------------------------------

def _train(config: str, phantoms: Path, out: Path, steps: int, text: str = "") -> tuple[Path, list[dict]]:
    """A short run of ``configs/<config>.yaml`` on phantoms; its checkpoint and per-step metrics."""
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    overrides = [f"out={out}", f"data.sources=[{{source: phantom, path: {phantoms}}}]",
                 "data.split_fractions={train: 1.0}", "model.image_size=64",
                 "model.image_tower.kwargs={depth: 2}",
                 "model.text_tower.kwargs={pooling: mean, layers: 2, hidden_size: 64, heads: 2, "
                 f"max_length: 64{text}}}",
                 f"optim.steps={steps}", "optim.batch_size=16", "optim.lr=1.0e-3", "optim.warmup_steps=5",
                 "optim.log_every=1", "runtime.device=cpu", "data.vocab_size=500",
                 "objective.kwargs.queue_size=48",
                 f"checkpoint={{every: {steps}, keep_last: 1}}"]
    checkpoint = pretrain(TrainConfig.from_file(CONFIGS / f"{config}.yaml", overrides), progress=False)
    return checkpoint, logged(out)


def test_declip_loss_falls_on_phantoms(phantoms_with_label_only: Path, tmp_path: Path) -> None:
    from radlab.train.state import latest_state, load_state

    steps = 40
    checkpoint, records = _train("declip", phantoms_with_label_only, tmp_path, steps)
    losses = [r["loss"] for r in records]
    assert len(losses) == steps and np.isfinite(losses).all()
    # 12 reports x 2 views a step fill the queue of 48 in two steps: NNS is 0, then live from step 3 on
    assert [r["nns"] for r in records[:2]] == [0, 0] and all(r["nns"] > 0 for r in records[2:])
    first, last = np.mean(losses[2:12]), np.mean(losses[-10:])  # from the first step with every term live
    mvs = [np.mean([r["mvs"] for r in part]) for part in (records[:10], records[-10:])]
    print(f"declip: steps 3-12 {first:.4f}, last 10 steps {last:.4f} ({100 * (1 - last / first):.1f}% "
          f"lower); mvs {mvs[0]:.4f} -> {mvs[1]:.4f}")
    assert last < 0.97 * first and mvs[1] < 0.95 * mvs[0]
    tss = [np.mean([r["tss"] for r in part]) for part in (records[:10], records[-10:])]
    accuracy = [np.mean([r["mlm_accuracy"] for r in part]) for part in (records[:10], records[-10:])]
    print(f"tss {tss[0]:.4f} -> {tss[1]:.4f}; mlm accuracy {accuracy[0]:.3f} -> {accuracy[1]:.3f}")
    assert tss[1] < 0.93 * tss[0] and accuracy[1] > accuracy[0] + 0.02  # the MLM learns (first vs last 10 steps)
    assert (checkpoint / "model.safetensors").exists()
    state = load_state(latest_state(tmp_path))["objective"]
    assert int(state["queue_filled"]) == 48 and int(state["queue_ptr"]) == (steps * 24) % 48


def test_low_data_recipe_trains_its_local_term_on_phantoms(phantoms_with_label_only: Path, tmp_path: Path) -> None:
    """``configs/low_data.yaml``: DeCLIP's terms and GLoRIA's local one train together; the checkpoint's encoder
    carries the trained matcher and the summed text layers."""
    from safetensors.torch import load_file

    from radlab.models import load_encoder

    checkpoint, records = _train("low_data", phantoms_with_label_only, tmp_path, 30, ", hidden_layers: 2")
    local = [np.mean([r["local"] for r in part]) for part in (records[:10], records[-10:])]
    losses = [np.mean([r["loss"] for r in part]) for part in (records[2:12], records[-10:])]
    print(f"low_data: local {local[0]:.4f} -> {local[1]:.4f}; loss {losses[0]:.4f} -> {losses[1]:.4f}")
    assert np.isfinite([r["loss"] for r in records]).all() and all(r["nns"] > 0 for r in records[2:])
    assert local[1] < 0.97 * local[0] and losses[1] < 0.97 * losses[0]
    encoder = load_encoder(checkpoint)
    trained = load_file(str(checkpoint / "objective.safetensors"))["matcher.embedder.weight"]
    assert torch.equal(encoder.local_match.embedder.weight, trained)
    assert encoder.text_tower.hidden_layers == 2


def test_nearest_neighbours_skip_every_entry_of_the_querys_study() -> None:
    """A study's frontal and lateral images carry one report: the sibling's queued copy is no neighbour."""
    objective = DeCLIPObjective(embed_dim=2, image_dim=3, queue_size=4, tss_weight=0.0)
    queued = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.6, 0.8]]), dim=-1)
    objective.push(queued, torch.tensor([7, 7, 8, 9]))
    _, slots = objective.nearest(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([7, 5]))
    assert slots.tolist() == [3, 2]
