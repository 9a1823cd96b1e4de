"""A rule-based finding extractor for chest X-ray reports, in the NegEx / CheXpert-labeler style; its words
(mentions, cues, windows) are in ``radlab.data.labeller_vocabulary``.

Per sentence, every mention of a canonical finding (``MENTIONS``; not inside a "non"/"un" word such as
"noncalcified", nor inside a phrase where it names nothing, ``EXCLUDED``: "aortic calcification") is classified
by the cues around it in its clause: a hypothetical ("evaluate for", "rule out", "if", "may not be
demonstrated") gives no label; uncertainty phrases that contain a negation word ("cannot exclude") -> -1; then
negation ("no", "without", "free of", "negative for", "resolved", "not well seen", "unlikely", ...) -> 0; then
uncertainty ("possible", "may", "suggest", ...) -> -1; else 1. Phrases that suggest a finding without naming it
(``SUGGESTIVE``: costophrenic blunting, mediastinal prominence) give -1 where a mention would give 1. Phrases
that only look like a cue ("no interval change in", "not seen on prior", "not well seen on the lateral view")
block the cues they overlap (``PSEUDO_NEGATION``). Phrases that state a finding is normal ("heart size is
normal") give 0 (``NORMAL``). Negation-like cues (hypothetical, negated uncertainty, negation) reach
``NEGATION_WINDOW`` words forward (lists such as "no consolidation, effusion or pneumothorax"), uncertainty cues
``UNCERTAIN_WINDOW``, and as far as negation over a list of alternatives ("may represent a focal area of
consolidation or atelectasis"); post-cues reach ``POST_WINDOW`` words back, a plural one as far as negation
over the list or phrase it agrees with ("consolidation, atelectasis and blunting in the left lower lobe have
cleared"); no cue reaches across a clause break ("but", "however", ";", "there is", ...); a post-cue stops at
another cue, and at another mention unless the earlier one has no own cue ("atelectasis or effusion cannot be
excluded" vs "no pneumothorax, effusion cannot be excluded"). A pre-cue inside an earlier mention's post-cue
does not reach forward over a comma (the "not" of "effusion is not seen, small pneumothorax"), though it still
heads a mention right after it ("tortuous aorta, cannot exclude aortic aneurysm"). A pre-cue that reaches over a
comma and an earlier mention (a list head: "no pneumothorax, effusion") counts only for mentions without a
post-cue of their own, so "no pneumothorax, effusion is possible" gives 0 / -1 while "no consolidation, effusion
or pneumothorax" and "no pneumothorax or effusion is suspected" give 0 throughout. Report labels combine
sentences as positive > uncertain > negative, NaN for findings never mentioned; positives and uncertains
propagate to parents; no_finding is 1 when no finding but support devices is positive or uncertain (the
CheXpert rule), else 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from radlab.data.labeller_vocabulary import (
    EXCLUDED,
    HYPOTHETICAL_POST,
    HYPOTHETICAL_PRE,
    LIST_ITEM_WORDS,
    LIST_SEPARATOR,
    MENTIONS,
    NEGATION_POST,
    NEGATION_PRE,
    NEGATION_WINDOW,
    NORMAL,
    NOT_PREFIXED,
    PLURAL_POST,
    POST_WINDOW,
    PSEUDO_NEGATION,
    SUGGESTIVE,
    TERMINATORS,
    UNCERTAIN_NEGATED,
    UNCERTAIN_POST,
    UNCERTAIN_PRE,
    UNCERTAIN_WINDOW,
)
from radlab.data.records import RecordTable, label_column
from radlab.data.reports import labelled_text, split_sentences
from radlab.data.sources.common import NAN, combine
from radlab.data.taxonomy import FINDING_NAMES, NEGATIVE, POSITIVE, UNCERTAIN, propagate_to_parents

NOT_FINDINGS = {"no_finding", "support_devices"}
PRE_KINDS = ("hypothetical_pre", "uncertain_negated", "negation_pre", "uncertain_pre")
POST_KINDS = ("hypothetical_post", "uncertain_negated", "negation_post", "uncertain_post")


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTION_RE = {name: _compile(tuple(f"{NOT_PREFIXED}(?:{q})" for q in p)) for name, p in MENTIONS.items()}
_NORMAL_RE = {name: _compile(p) for name, p in NORMAL.items()}
_EXCLUDED_RE = {name: _compile(p) for name, p in EXCLUDED.items()}
_SUGGESTIVE_RE = {name: _compile(p) for name, p in SUGGESTIVE.items()}
_PLURAL_RE = re.compile(PLURAL_POST)
_SEPARATOR_RE = re.compile(LIST_SEPARATOR)
_CUES = {kind: _compile(p) for kind, p in {
    "hypothetical_pre": HYPOTHETICAL_PRE, "hypothetical_post": HYPOTHETICAL_POST,
    "uncertain_negated": UNCERTAIN_NEGATED, "pseudo": PSEUDO_NEGATION, "negation_pre": NEGATION_PRE,
    "negation_post": NEGATION_POST, "uncertain_pre": UNCERTAIN_PRE, "uncertain_post": UNCERTAIN_POST}.items()}
_TERMINATOR_RE = _compile(TERMINATORS)
_WORD = re.compile(r"\b(?!x{2,}\b)\w+")  # words, not de-identification marks ("XXXX") inside a cue's window


@dataclass(frozen=True)
class ReportLabels:
    """Report-level labels (finding -> 1/0/-1/NaN) and per-sentence labels (mentioned findings only)."""

    labels: dict[str, float]
    sentences: list[tuple[str, dict[str, float]]]


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _cue_spans(sentence: str) -> dict[str, list[tuple[int, int]]]:
    spans = {kind: [m.span() for m in regex.finditer(sentence)] for kind, regex in _CUES.items()}
    blocked = spans["uncertain_negated"] + spans["pseudo"]
    for kind in ("hypothetical_pre", "hypothetical_post", "negation_pre", "negation_post", "uncertain_pre",
                 "uncertain_post"):
        spans[kind] = [s for s in spans[kind] if not any(b[0] < s[1] and s[0] < b[1] for b in blocked)]
    return spans


def _inside(lo: int, hi: int, spans: list[tuple[int, int]]) -> bool:
    return any(lo <= a and b <= hi for a, b in spans)


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in spans)


def _post_reaches(text: str, end: int, cue: tuple[int, int]) -> bool:
    """A post-cue reaches a mention ending at ``end``: ``POST_WINDOW`` words, a plural one ("have cleared") up to
    ``NEGATION_WINDOW`` over the list or phrase it agrees with."""
    words = _words(text[end:cue[0]])
    return words <= POST_WINDOW or (words <= NEGATION_WINDOW and bool(_PLURAL_RE.match(text, cue[0])))


def _alternatives(between: str) -> bool:
    """The words from a hedge to a mention past ``UNCERTAIN_WINDOW`` are a list of alternatives ("may represent a
    focal area of consolidation or atelectasis"): within ``NEGATION_WINDOW``, with a comma, "or" or "versus", and
    the mention's own item short."""
    items = _SEPARATOR_RE.split(between)
    return (_words(between) <= NEGATION_WINDOW and re.search(r",|\bor\b|\bversus\b|\bvs\b", between) is not None
            and _words(items[-1]) <= LIST_ITEM_WORDS)


@dataclass(frozen=True)
class _Sentence:
    """One lower-cased sentence: its cue spans by kind, clauses, and all cue and mention spans."""

    text: str
    spans: dict[str, list[tuple[int, int]]]
    clauses: list[tuple[int, int]]
    cues: list[tuple[int, int]]
    mentions: list[tuple[int, int]]

    def clause(self, position: int) -> tuple[int, int]:
        return next(c for c in self.clauses if c[0] <= position < c[1])

    @cached_property
    def served(self) -> list[tuple[int, int]]:
        """Post-cues that apply to a mention before them ("effusion is not seen")."""
        return [cue for kind in POST_KINDS for cue in self.spans[kind] if any(
            self.clause(cue[0])[0] <= a and b <= cue[0] and _post_reaches(self.text, b, cue)
            and not _inside(b, cue[0], self.cues) for a, b in self.mentions)]


def _classify(s: _Sentence, start: int, end: int) -> float:
    clause = s.clause(start)

    def reaching(kind: str) -> list[tuple[int, int]]:
        window = UNCERTAIN_WINDOW if kind == "uncertain_pre" else NEGATION_WINDOW
        return [(a, b) for a, b in s.spans[kind] if clause[0] <= a and b <= end and (
            _words(s.text[b:start]) <= window or kind == "uncertain_pre" and _alternatives(s.text[b:start]))]

    def borrowed(cue: tuple[int, int]) -> bool:
        # part of an earlier mention's post-cue and a comma away ("effusion is not seen, small pneumothorax"),
        # not one that also heads this mention ("tortuous aorta, cannot exclude aortic aneurysm")
        return "," in s.text[cue[1]:start] and any(a < cue[1] and cue[0] < b for a, b in s.served)

    def listed(cue: tuple[int, int]) -> bool:  # a list head over a comma and a mention ("no pneumothorax, effusion")
        return "," in s.text[cue[1]:start] and _inside(cue[1], start, s.mentions)

    pre = {kind: [cue for cue in reaching(kind) if not borrowed(cue)] for kind in PRE_KINDS}
    # A post-cue reaches back only to the nearest mentions: never past another cue, and past another mention
    # only to a bare list item ("atelectasis or effusion cannot be excluded"), not to one with a cue of its
    # own ("no pneumothorax, effusion cannot be excluded").
    stops = s.cues + s.mentions if any(not listed(cue) for found in pre.values() for cue in found) else s.cues

    def after(kind: str) -> bool:
        return any(a >= end and b <= clause[1] and _post_reaches(s.text, end, (a, b))
                   and not _inside(end, a, stops) for a, b in s.spans[kind])

    post = {kind: after(kind) for kind in POST_KINDS}

    def before(kind: str) -> bool:  # a mention's own post-cue beats a list head's pre-cue
        return any(not listed(cue) or not any(post.values()) for cue in pre[kind])

    if before("hypothetical_pre") or post["hypothetical_post"]:
        return NAN
    if before("uncertain_negated") or post["uncertain_negated"]:
        return UNCERTAIN
    if before("negation_pre") or post["negation_post"]:
        return NEGATIVE
    if before("uncertain_pre") or post["uncertain_post"]:
        return UNCERTAIN
    return POSITIVE


def label_sentence(sentence: str) -> dict[str, float]:
    """Findings mentioned in one sentence -> 1 / 0 / -1 (hypothetical mentions only: absent)."""
    text = sentence.lower()
    breaks = [0] + [m.start() for m in _TERMINATOR_RE.finditer(text)] + [len(text)]
    spans = _cue_spans(text)
    excluded = {name: [m.span() for m in regex.finditer(text)] for name, regex in _EXCLUDED_RE.items()}
    mentions = {name: [m.span() for m in regex.finditer(text) if not _overlaps(m.span(), excluded.get(name, []))]
                for name, regex in _MENTION_RE.items()}
    suggestive = {name: [m.span() for m in regex.finditer(text)] for name, regex in _SUGGESTIVE_RE.items()}
    context = _Sentence(text, spans, list(zip(breaks[:-1], breaks[1:], strict=True)),
                        [span for kind, found in spans.items() if kind != "pseudo" for span in found],
                        [span for found in (*mentions.values(), *suggestive.values()) for span in found])
    out: dict[str, float] = {}
    for name, found in mentions.items():
        values = [_classify(context, a, b) for a, b in found]
        hinted = [_classify(context, a, b) for a, b in suggestive.get(name, [])]
        values += [UNCERTAIN if v == POSITIVE else v for v in hinted]  # suggests, never names, the finding
        if name in _NORMAL_RE and _NORMAL_RE[name].search(text):
            values.append(NEGATIVE)
        if not np.isnan(value := combine(values)):
            out[name] = value
    return out


def label_report(text: str) -> ReportLabels:
    """Labels for one report; only findings/impression are read when the report has them."""
    sentences = [(s, label_sentence(s)) for s in split_sentences(labelled_text(text))]
    merged: dict[str, float] = {}
    for _, found in sentences:
        for name, value in found.items():
            merged[name] = combine([merged.get(name, NAN), value])
    merged = propagate_to_parents(merged)
    if sentences:
        abnormal = any(v in (POSITIVE, UNCERTAIN) for k, v in merged.items() if k not in NOT_FINDINGS)
        merged["no_finding"] = NEGATIVE if abnormal else POSITIVE
    return ReportLabels({n: merged.get(n, NAN) for n in FINDING_NAMES}, sentences)


def label_texts(texts: list[str]) -> np.ndarray:
    """Report labels as float32 [N, len(FINDING_NAMES)]: 1, 0, -1 or NaN (each distinct text labelled once)."""
    out = np.full((len(texts), len(FINDING_NAMES)), np.nan, dtype=np.float32)
    done: dict[str, np.ndarray] = {}
    for i, text in enumerate(texts):
        if text and text.strip():
            if text not in done:
                labels = label_report(text).labels
                done[text] = np.array([labels[n] for n in FINDING_NAMES], dtype=np.float32)
            out[i] = done[text]
    return out


def add_report_labels(table: RecordTable) -> RecordTable:
    """Fill label cells the source left unannotated (NaN) from the report text; provider labels win."""
    extracted = label_texts(table.texts())
    frame = table.frame.copy()
    for k, name in enumerate(FINDING_NAMES):
        column = label_column(name)
        current = frame[column].to_numpy(dtype=np.float32, na_value=np.nan) if column in frame else extracted[:, k] * np.nan
        frame[column] = np.where(np.isnan(current), extracted[:, k], current)
    return RecordTable(frame, table.root)


def agreement(table: RecordTable) -> pd.DataFrame:
    """Labeller vs the table's own labels, per annotated finding, one row per distinct report.

    Binary metrics count uncertain as positive on both sides (1 or -1 vs 0 or unmentioned); ``f1_strict``
    counts only 1 as positive; ``exact`` is 3-class agreement (unmentioned read as 0)."""
    frame = table.frame[table.frame["report"].str.strip() != ""]
    frame = frame.drop_duplicates(subset=["study_id", "report"]).reset_index(drop=True)
    predicted = label_texts(frame["report"].tolist())
    rows = []
    for k, name in enumerate(FINDING_NAMES):
        column = label_column(name)
        reference = frame[column].to_numpy(dtype=np.float32, na_value=np.nan) if column in frame else None
        if reference is None or np.isnan(reference).all():
            continue
        keep = ~np.isnan(reference)
        ref, pred = reference[keep], np.nan_to_num(predicted[keep, k], nan=NEGATIVE)
        ref_pos, pred_pos = ref != NEGATIVE, pred != NEGATIVE
        tp = float((ref_pos & pred_pos).sum())
        precision, recall = tp / max(pred_pos.sum(), 1), tp / max(ref_pos.sum(), 1)
        strict_tp = float(((ref == POSITIVE) & (pred == POSITIVE)).sum())
        rows.append({
            "finding": name, "reports": int(keep.sum()), "reference_pos": int(ref_pos.sum()),
            "labeller_pos": int(pred_pos.sum()), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "f1_strict": 2 * strict_tp / max(float((ref == POSITIVE).sum() + (pred == POSITIVE).sum()), 1.0),
            "agreement": float((ref_pos == pred_pos).mean()), "exact": float((ref == pred).mean()),
        })
    return pd.DataFrame(rows)


def agreement_markdown(results: dict[str, pd.DataFrame]) -> str:
    """docs/report_labeller.md: method, then one agreement table per reference set."""
    lines = [
        "# Report labeller: agreement with reference labels",
        "",
        "Generated by `radlab data label-agreement SOURCE:PATH ... --out docs/report_labeller.md` (do not edit",
        "by hand); here `iu_xray:$RADLAB_DATA/iu_xray_reports` (the bundled two-CSV form) and `openi:DIR`, DIR",
        "holding `ecgen-radiology/` from NLMCXR_reports.tgz (shipped in torchxrayvision's package data). The",
        "two are largely the same Indiana University studies, in two forms. The rule-based labeller",
        "(`radlab.data.labeller`) reads each report's FINDINGS and IMPRESSION, splits sentences, finds mentions",
        "of the canonical findings and classifies each by its negation and uncertainty cues. Each distinct",
        "report is compared with the labels its source ships, on the findings that source annotates.",
        "",
        "Columns: `reports` compared; `ref+` / `lab+` reports positive in the reference / by the labeller,",
        "counting uncertain (-1) as positive on both sides; `P`, `R`, `F1` on that binary reading; `F1 (1 only)`",
        "counts only certain positives; `agree` binary agreement; `exact` 3-class agreement (1 / 0 / -1, an",
        "unmentioned finding read as 0). Note: IU X-ray's `no_finding` is its MeSH tag \"normal\" (no abnormality",
        "of any kind, devices and degenerative changes included), while the labeller follows the CheXpert rule",
        "(no finding among the taxonomy's pathologies), so its precision there is low by definition. `calcification`",
        "is a calcified granuloma or focus on both sides: calcification of the aorta, other vessels or valves is read",
        "as no finding (IU X-ray's Calcinosis/aorta, like its Atherosclerosis/aorta, maps to none).",
    ]
    for name, frame in results.items():
        lines += ["", f"## {name}", "", "| finding | reports | ref+ | lab+ | P | R | F1 | F1 (1 only) | agree | exact |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in frame.itertuples(index=False):
            lines.append(f"| {r.finding} | {r.reports} | {r.reference_pos} | {r.labeller_pos} | {r.precision:.3f} | "
                         f"{r.recall:.3f} | {r.f1:.3f} | {r.f1_strict:.3f} | {r.agreement:.3f} | {r.exact:.3f} |")
        populated = frame[frame["reference_pos"] >= 20]
        if len(populated):
            lines += ["", f"Macro F1 over findings with at least 20 reference positives "
                          f"({len(populated)} findings): {populated['f1'].mean():.3f}."]
    return "\n".join(lines) + "\n"
