"""Report text as image-text objectives see it: sections and sentences of a report (DeCLIP's text view), and the
one sentence per report that ConVIRT and GLoRIA contrast with the image (``text_view: sentence``)."""

from __future__ import annotations

import random
import re

import torch
from torch import nn

from radlab.objectives.base import step_seed
from radlab.train.distributed import from_main
from radlab.train.loader import sample_seed

SECTION_HEADER = re.compile(r"\b([A-Z][A-Z /&-]*[A-Z]):\s*")  # FINDINGS:, IMPRESSION:, CLINICAL HISTORY:
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
LETTER = re.compile(r"[^\W\d_]")
WORD = re.compile(r"\w+")
TEXT_VIEWS = ("sentence", "report")


def report_sections(report: str) -> list[tuple[str, list[str]]]:
    """A report as (header, sentences) per section; text before the first header has header ""."""
    parts = SECTION_HEADER.split(report)
    sections = [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    return [(header, [s for s in SENTENCE_BREAK.split(body.strip()) if s]) for header, body in sections]


def report_sentences(report: str, min_words: int = 1) -> list[str]:
    """The report's sentences in order, over all sections, without their headers; pieces without a letter
    (list numbers "1.", stray punctuation) or with fewer than ``min_words`` ``\\w+`` words are no sentence."""
    return [s for _, sentences in report_sections(report) for s in sentences
            if LETTER.search(s) and len(WORD.findall(s)) >= min_words]


def sample_sentences(reports: list[str], samples: list[int], min_words: int = 1) -> list[str]:
    """One sentence of each report (``report_sentences``) drawn uniformly; a report without one comes back
    whole. Report k's draw is seeded by (step seed, ``samples[k]``, its dataset row): the step seed is one
    ``step_seed`` draw of rank 0 (every rank draws one, so every rank's global RNG, which training states save
    and restore, advances alike), so a sample draws the same sentence whichever rank holds it, and a resumed
    run draws what the uninterrupted one did. A collective: every rank calls it at every step."""
    seed = from_main(step_seed())
    out = []
    for report, sample in zip(reports, samples, strict=True):
        sentences = report_sentences(report, min_words)
        out.append(random.Random(sample_seed(seed, sample)).choice(sentences) if sentences else report)
    return out


def check_text_view(view: str) -> str:
    if view not in TEXT_VIEWS:
        raise ValueError(f"text_view must be one of {TEXT_VIEWS}, got {view!r}")
    return view


def text_view_tokens(model: nn.Module, batch: dict, view: str, min_words: int = 1) -> dict[str, torch.Tensor]:
    """Tokens of what the batch's samples with a report contrast with their images: the whole report
    (``view`` "report": the batch's tokens) or one sentence of it drawn per step (``view`` "sentence":
    ``sample_sentences`` over the batch's ``text`` and ``index`` with ``min_words``, tokenised by the text
    tower)."""
    keep = batch["has_text"]
    tokens = {k: v[keep] for k, v in batch["tokens"].items()}
    if view == "report":
        return tokens
    rows = keep.nonzero().flatten().tolist()
    index = batch["index"].tolist()
    sentences = sample_sentences([batch["text"][i] for i in rows], [index[i] for i in rows], min_words)
    if not rows:  # the empty tokens run the tower's stand-in row, as on ranks with reports
        return tokens
    device = batch["tokens"]["input_ids"].device
    return {k: v.to(device) for k, v in model.text_tower.tokenize(sentences).items()}
