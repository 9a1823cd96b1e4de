"""DeCLIP: CLIP plus image and text self-supervision, multi-view and nearest-neighbour supervision, for small
data; with GLoRIA's local term it is the low-data study's combined recipe."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.augment import TwoViews
from radlab.objectives.base import OBJECTIVES, Objective, step_seed
from radlab.objectives.clip import LogitScale, clip_loss
from radlab.objectives.gloria import local_loss, start_matcher
from radlab.objectives.masked_language import MaskedLanguageModelling
from radlab.objectives.report_text import report_sections
from radlab.objectives.simclr import nt_xent
from radlab.train.distributed import gather_with_grad

log = logging.getLogger(__name__)

def augment_report(report: str, rng: random.Random, drop: float, shuffle: float) -> str:
    """A second "view" of a report: each sentence is dropped with probability ``drop`` (at least one is kept),
    and each section's remaining sentences are shuffled with probability ``shuffle``; sections stay in order
    under their headers, and emptied sections lose their header. Reports of one sentence come back as they
    are."""
    sections = report_sections(report)
    if sum(len(sentences) for _, sentences in sections) <= 1:
        return report
    kept = [[rng.random() >= drop for _ in sentences] for _, sentences in sections]
    if not any(map(any, kept)):
        i, j = rng.choice([(i, j) for i, row in enumerate(kept) for j in range(len(row))])
        kept[i][j] = True
    parts = []
    for (header, sentences), keep in zip(sections, kept, strict=True):
        chosen = [s for s, k in zip(sentences, keep, strict=True) if k]
        if len(chosen) > 1 and rng.random() < shuffle:
            rng.shuffle(chosen)
        if chosen:
            parts.append(f"{header}: {' '.join(chosen)}" if header else " ".join(chosen))
    return " ".join(parts)


def augment_reports(reports: list[str], drop: float, shuffle: float) -> list[str]:
    """``augment_report`` over a batch, seeded by ``step_seed``."""
    rng = random.Random(step_seed())
    return [augment_report(report, rng, drop, shuffle) for report in reports]


@OBJECTIVES.register("declip", "DeCLIP: CLIP + image NT-Xent + masked LM + multi-view + nearest-neighbour "
                                "supervision")
class DeCLIPObjective(Objective):
    """DeCLIP (Li et al., ICLR 2022, "Supervision Exists Everywhere: A Data Efficient Contrastive
    Language-Image Pre-training Paradigm", arXiv:2110.05208), with reports as the texts.

    Each image gives two radiograph views (``TwoViews``) with normalised embeddings x1, x2; each report t a
    second view t' (``augment_report``: sentences dropped or shuffled within sections), both encoded by the
    text tower. With ℓ(u, v) the symmetric InfoNCE of ``clip_loss`` (learnable scale s, 1/0.07, clamped at
    100) over the N global pairs that have report text:

        L_CLIP = ℓ(x1, t)                                             (logged; one of the MVS pairs)
        L_MVS  = 1/4 [ ℓ(x1, t) + ℓ(x2, t) + ℓ(x1, t') + ℓ(x2, t') ]
        L_ISS  = NT-Xent(g(h1), g(h2); τ_ss)                          (all images, with or without a report)
        L_TSS  = 1/M sum_k -log softmax(LN(GELU(W h_k + c)) E^T + b)[y_k]   (M masked tokens in the reports t)
        L_NNS  = 1/4 sum_{a∈x1,x2} sum_{b∈t,t'} 1/N sum_i -log exp(s a_i·nn(b_i)) / sum_j exp(s a_i·nn(b_j))
        L      = (1 - w_ISS - w_TSS - w_NNS) L_MVS + w_ISS L_ISS + w_TSS L_TSS + w_NNS L_NNS

    with w_ISS = ``iss_weight``, w_TSS = ``tss_weight``, w_NNS = ``nns_weight``, 0.2 each (L_MVS takes 0.4).

    With ``local_weight`` λ > 0, GLoRIA's word-region InfoNCE (``objectives/gloria.py``: both directions summed,
    scale τ3 = ``local_scale``, τ1/τ2 ``temp_attention``/``temp_words``) between the first view's regions and
    the report t's words is added: L + λ L_local(x1, t). Global and local contrastive terms, image and text
    self-supervision, and extra positives from augmentation and nearest neighbours together are the
    combination Windsor et al. (MIDL 2023, "Vision-Language Modelling for Radiological Imaging and Reports in
    the Low Data Regime") found best with little data (``configs/low_data.yaml``). The matcher is the
    encoder's after training (``RadEncoder.local_match``), for ``similarity: both`` evaluation.

    The paper writes L = (1-α-β-γ) L_CLIP + α (L_ISS + L_TSS) + β L_MVS + γ L_NNS (α = β = γ = 0.2). Its code
    (Sense-GVT/DeCLIP: prototype/solver/declip_solver.py, experiments/declip_experiments/*/config.yaml) has no
    separate CLIP term: the four-pair MVS mean, which contains the CLIP pair, takes the CLIP weight, and every
    released DeCLIP config runs the MLM: MVS 0.4, SimSiam 0.2, MLM 0.2, NNS 0.2 (YFCC-15M R50 and ViT-B/32,
    DeCLIP-88M R50), or MVS 0.6 with the others at 0.2 (DeCLIP-88M ViT-B/32: a sum of 1.2, not renormalised).
    Here L_MVS takes what the others leave of 1: 0.4 by default, the YFCC-15M setting; ``tss_weight`` 0 gives
    0.6 and exactly the loss of before TSS existed. ISS is SimCLR's NT-Xent (``nt_xent``; projection
    g = W2 ReLU(BN(W1 h)) on the pooled tower features h) instead of SimSiam, because it exists here, is
    tested, and is exact over the global batch under DDP.

    TSS (``MaskedLanguageModelling``, equations there): BERT's masking of the report t (not t'; the reference
    masks its first caption view too), 15% of the non-special tokens, 80% [MASK] / 10% random / 10% kept, as
    the reference's ``mask_tokens``; h_k the tower's last hidden state at masked token k of label y_k, decoded
    by BERT's prediction head with the tower's input word embeddings E (read from the model at every step),
    as the reference's BERT text encoders (BertForMaskedLM; its CLIP-style transformer uses an untied linear
    layer). Masks are drawn from a generator seeded by ``step_seed``. Deviations: the reference feeds the
    masked caption's single pass to both the MLM and the contrastive terms; here the masked report is a third
    text-tower pass, so MVS and NNS see the unmasked report; random replacements skip special tokens (the
    reference draws from the whole vocabulary); the mean runs over the masked tokens of the global batch
    (the reference averages per-rank means); the head starts fresh, also on pretrained towers (their MLM
    heads are not loaded). TSS needs a text tower with a Hugging Face model and a tokenizer with a mask token
    (``check_mlm_tower``: radlab's BERT towers, GLoRIA's, MedCLIP's and BioViL's; not open_clip's).

    NNS: a FIFO queue (buffers, checkpointed) of the last ``queue_size`` (4096) detached text embeddings,
    both views, gathered from all ranks so every rank holds the same queue. nn(b_i) is the queue entry of
    highest cosine to b_i that comes from another study (the batch's ``study``: in a small data set the queue
    holds a report's own earlier embedding, or a sibling image's copy of it, a stale copy of the positive).
    Lookups precede this step's
    push. Until the queue is full L_NNS is 0 (logged as such). The reference instead starts from random
    vectors and keeps a per-rank queue.
    """

    requires_text = True

    @classmethod
    def trains_without_reports(cls, option: Callable[[str], object]) -> str | None:
        """ISS trains on images alone; TSS masks report tokens, of which there are none without reports."""
        trains = float(option("iss_weight")) > 0 and float(option("tss_weight")) == 0
        return "its image self-supervision (ISS) term" if trains else None

    def __init__(self, embed_dim: int, image_dim: int, iss_weight: float = 0.2, nns_weight: float = 0.2,
                 queue_size: int = 4096, iss_temperature: float = 0.2, proj_dim: int = 128,
                 hidden_dim: int = 512, init_temperature: float = 0.07, max_scale: float = 100.0,
                 sentence_drop: float = 0.2, section_shuffle: float = 0.5,
                 crop_scale: tuple[float, float] = (0.3, 1.0), hflip: bool = False, tss_weight: float = 0.2,
                 mask_prob: float = 0.15, local_weight: float = 0.0, local_scale: float = 10.0,
                 temp_attention: float | None = None, temp_words: float | None = None,
                 model: nn.Module | None = None) -> None:
        """``model``, the encoder (its text tower), is needed when ``tss_weight`` or ``local_weight`` > 0.
        ``hflip`` (off, as in configs/declip.yaml) flips both image views, and both are paired with reports
        (MVS, NNS), so a report's "left" would name the flipped image's right: turn it on only for reports that
        never name a side (SLIP flips only its self-supervision views)."""
        super().__init__()
        weights = {"iss_weight": iss_weight, "tss_weight": tss_weight, "nns_weight": nns_weight}
        if min(weights.values()) < 0 or sum(weights.values()) >= 1:
            raise ValueError(f"{weights}: need each >= 0 and a sum < 1 (the MVS weight is 1 - their sum)")
        if queue_size < 1 or not 0 <= sentence_drop < 1:
            raise ValueError(f"queue_size {queue_size}, sentence_drop {sentence_drop}: need >= 1, in [0, 1)")
        if (tss_weight > 0 or local_weight > 0) and model is None:
            raise ValueError("tss_weight or local_weight > 0 needs the model: the masked language model and the "
                             "word-region matcher read its towers")
        if local_weight < 0:
            raise ValueError(f"local_weight {local_weight}: need >= 0")
        self.logit_scale = LogitScale(init_temperature, max_scale)
        self.projection = nn.Sequential(nn.Linear(image_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                        nn.ReLU(inplace=True), nn.Linear(hidden_dim, proj_dim))
        self.mlm = MaskedLanguageModelling(model.text_tower, mask_prob) if tss_weight > 0 else None
        self.matcher = start_matcher(model, temp_attention, temp_words) if local_weight > 0 else None
        self.local_weight, self.local_scale = local_weight, local_scale
        self.iss_weight, self.tss_weight, self.nns_weight = iss_weight, tss_weight, nns_weight
        self.mvs_weight = 1 - iss_weight - nns_weight - tss_weight
        self.iss_temperature = iss_temperature
        self.queue_size = queue_size
        self.sentence_drop, self.section_shuffle = sentence_drop, section_shuffle
        self.crop_scale, self.hflip = tuple(crop_scale), hflip
        self.register_buffer("queue", torch.zeros(queue_size, embed_dim))
        self.register_buffer("queue_study", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        """A state from before the queue held study numbers (``queue_index``: record numbers, which cannot be
        turned into studies) loads with the neighbour queue emptied; it refills in queue_size / batch steps."""
        records = state_dict.pop(prefix + "queue_index", None)
        if records is not None and prefix + "queue_study" not in state_dict:
            log.warning("DeCLIP state from an older radlab (record-numbered neighbour queue): the queue starts "
                        "empty and refills, so this resume differs from the uninterrupted run until then")
            state_dict[prefix + "queue_study"] = torch.full_like(records, -1)
            state_dict[prefix + "queue_filled"] = torch.zeros_like(self.queue_filled)
            state_dict[prefix + "queue_ptr"] = torch.zeros_like(self.queue_ptr)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attach(self, model: nn.Module) -> None:
        if self.matcher is not None:
            model.local_match = self.matcher

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        return TwoViews(image_size, scale=self.crop_scale, hflip=self.hflip)

    def restart(self) -> None:
        """An empty neighbour queue: the old run's entries are embeddings of its data, numbered by its studies."""
        self.queue.zero_()
        self.queue_study.fill_(-1)
        self.queue_ptr.zero_()
        self.queue_filled.zero_()

    @torch.no_grad()
    def push(self, entries: torch.Tensor, study: torch.Tensor) -> None:
        """Enqueue rows (oldest first) over the oldest entries; only the last ``queue_size`` rows survive."""
        n, size, ptr = len(entries), self.queue_size, int(self.queue_ptr)
        slots = (ptr + max(0, n - size) + torch.arange(min(n, size), device=entries.device)) % size
        self.queue[slots] = entries[-size:].to(self.queue.dtype)
        self.queue_study[slots] = study[-size:]
        self.queue_ptr.fill_((ptr + n) % size)
        self.queue_filled.fill_(min(size, int(self.queue_filled) + n))

    @torch.no_grad()
    def nearest(self, query: torch.Tensor, study: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's highest-cosine queue entry from another study (``study``: each row's; its own study's
        entries only if the queue holds nothing else), and the queue slots chosen."""
        cosine = F.normalize(query.to(self.queue.dtype), dim=-1) @ F.normalize(self.queue, dim=-1).T
        slots = (cosine - 4.0 * (study[:, None] == self.queue_study[None, :])).argmax(1)
        return self.queue[slots], slots

    def terms(self, image: tuple[torch.Tensor, torch.Tensor], text: tuple[torch.Tensor, torch.Tensor],
              iss: tuple[torch.Tensor, torch.Tensor], study: torch.Tensor,
              tss: tuple[torch.Tensor, torch.Tensor] | None = None,
              local: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss from embeddings: ``image`` (x1, x2) and ``text`` (t, t') normalised, rows paired, for this
        rank's samples with a report (their ``study`` numbers); ``iss`` the projections of both views of all its
        images; ``tss`` this rank's shares of L_TSS and of the masked-token accuracy, when TSS is on; ``local``
        this rank's share of L_local, when it is on. Pushes (t, t') to the queue in training mode."""
        scale = self.logit_scale()
        pairs = [clip_loss(x, t, scale) for t in text for x in image]
        mvs = torch.stack(pairs).mean()
        iss_loss = nt_xent(*iss, self.iss_temperature)
        if int(self.queue_filled) >= self.queue_size:
            neighbours = [self.nearest(t.detach(), study)[0].to(t.dtype) for t in text]
            nns = torch.stack([clip_loss(x, nb, scale, weight_image=1.0)  # image -> text only, as DeCLIP
                               for nb in neighbours for x in image]).mean()
        else:
            nns = (image[0].sum() + image[1].sum()) * 0.0  # keeps the graph (DDP) until the queue is full
        if self.training:
            entries = torch.cat([gather_with_grad(t.detach())[0] for t in text])
            all_study = gather_with_grad(study)[0]
            self.push(entries, torch.cat([all_study, all_study]))
        loss = self.mvs_weight * mvs + self.iss_weight * iss_loss + self.nns_weight * nns
        out = {"clip": pairs[0].detach(), "mvs": mvs.detach(), "nns": nns.detach(), "iss": iss_loss.detach(),
               "logit_scale": scale.detach(), "queue_fill": self.queue_filled.float() / self.queue_size}
        if tss is not None:
            loss = loss + self.tss_weight * tss[0]
            out.update(tss=tss[0].detach(), mlm_accuracy=tss[1].detach())
        if local is not None:
            loss = loss + self.local_weight * local
            out["local"] = local.detach()
        return {"loss": loss, **out}

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]] * 2
        keep = batch["has_text"]
        image_out = model.image_output(torch.cat(views[:2]))
        pooled = image_out.pooled
        z1, z2 = self.projection(pooled).chunk(2)
        x1, x2 = (x[keep] for x in F.normalize(model.project_image(image_out), dim=-1).chunk(2))
        reports = [text for text, has in zip(batch["text"], keep.tolist(), strict=True) if has]
        augmented = augment_reports(reports, self.sentence_drop, self.section_shuffle)
        tokens = {k: v[keep] for k, v in batch["tokens"].items()}
        text_out = model.text_output(tokens)
        text = F.normalize(model.text_proj(text_out.pooled), dim=-1)
        # without reports the empty tokens run the tower's stand-in row, as on ranks with reports (FSDP gathers)
        text_aug = model.encode_text(model.text_tower.tokenize(augmented) if reports else tokens)
        tss = self.mlm(model.text_tower, tokens, step_seed()) if self.mlm is not None else None
        local = None
        if self.matcher is not None:
            m = self.matcher
            regions = m.regions(image_out)[: len(keep)][keep]  # the first view's
            words, word_mask = m.words(text_out, tokens, model.text_tower.tokenizer)
            local = local_loss(regions, words, word_mask, m.temp_attention, m.temp_words, self.local_scale,
                               m.word_softmax)
        return self.terms((x1, x2), (text, text_aug), (z1, z2), batch["study"].to(keep.device)[keep], tss, local)
