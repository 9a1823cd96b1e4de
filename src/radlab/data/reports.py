"""Radiology report text: section parsing (FINDINGS, IMPRESSION, ...) and sentence splitting.

Headings are recognised followed by a colon: in any case at a line start or after a sentence end
("Impression:"), in capitals also after a space ("No focal infiltrates IMPRESSION: Emphysema."). Synonyms map
to one name (CONCLUSION -> impression, HISTORY -> indication). Text before the first heading is ``text``.
"""

from __future__ import annotations

import re

SECTION_NAMES: dict[str, str] = {
    "findings": "findings", "finding": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "opinion": "impression",
    "indication": "indication", "indications": "indication", "history": "indication",
    "clinical history": "indication", "clinical information": "indication", "reason for exam": "indication",
    "reason for examination": "indication", "clinical indication": "indication",
    "comparison": "comparison", "comparisons": "comparison",
    "technique": "technique", "examination": "examination", "exam": "examination", "procedure": "examination",
    "recommendation": "recommendation", "recommendations": "recommendation",
    "notification": "notification", "addendum": "addendum", "wet read": "wet_read",
}
CONTEXT_SECTIONS = {"indication", "comparison", "technique", "examination", "notification"}
_HEADING = re.compile(
    r"(?:^|(?<=[.;:!?\n])|(?<=\s)(?=(?-i:[A-Z][A-Z ]*:)))[ \t]*(?P<name>"
    + "|".join(sorted((re.escape(n) for n in SECTION_NAMES), key=len, reverse=True))
    + r")[ \t]*:", re.IGNORECASE | re.MULTILINE)
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "st", "fig", "resp", "etc", "a.m", "p.m"}
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n+|\n(?=\s*\d+[.)]\s)")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")


def parse_sections(text: str) -> dict[str, str]:
    """Ordered ``{section: text}``; repeated headings are joined; untitled leading text is ``text``."""
    text = text or ""
    sections: dict[str, str] = {}
    matches = list(_HEADING.finditer(text))
    starts = [(0, "text")] + [(m.end(), SECTION_NAMES[m.group("name").lower()]) for m in matches]
    ends = [m.start() for m in matches] + [len(text)]
    for (start, name), end in zip(starts, ends, strict=True):
        body = " ".join(text[start:end].split())
        if name == "text" and body.upper().startswith("FINAL REPORT"):
            body = body[len("FINAL REPORT"):].strip()
        if body:
            sections[name] = f"{sections[name]} {body}" if name in sections else body
    return sections


def full_report(findings: str, impression: str) -> str:
    """One report text from its sections, as every source writes ``report``: "FINDINGS: ... IMPRESSION: ...",
    each part only when present ('' when both are empty)."""
    parts = [f"FINDINGS: {findings}" if findings else "", f"IMPRESSION: {impression}" if impression else ""]
    return " ".join(p for p in parts if p)


def labelled_text(text: str) -> str:
    """The part of a report a labeller should read: findings and impression when present, else every
    section except context ones (indication, comparison, technique, examination); sections are joined by a
    blank line, so one that lacks final punctuation still ends its sentence."""
    sections = parse_sections(text)
    core = [sections[s] for s in ("findings", "impression") if s in sections]
    if not core:
        core = [body for name, body in sections.items() if name not in CONTEXT_SECTIONS]
    return "\n\n".join(core)


def split_sentences(text: str) -> list[str]:
    """Sentences of a report: split after . ! ? and at blank lines or numbered items, not after common
    abbreviations or inside decimals; list markers ("1.", "-") are dropped."""
    pieces = [p for p in _SPLIT.split(text or "") if p and p.strip()]
    sentences: list[str] = []
    for piece in pieces:
        tokens = sentences[-1].rstrip(".").split() if sentences else []
        last = tokens[-1].lower() if tokens else ""
        if sentences and sentences[-1].endswith(".") and last in _ABBREVIATIONS and not _is_item(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece.strip()}"
        else:
            sentences.append(piece.strip())
    out = [" ".join(_LIST_MARKER.sub("", s).split()) for s in sentences]
    return [s for s in out if s and not re.fullmatch(r"[\d.)\s]*", s)]


def _is_item(sentence: str) -> bool:
    return bool(re.fullmatch(r"\d+[.)]", sentence.strip()))
