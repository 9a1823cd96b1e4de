"""Templated report-like prompts from labels, so label-only data can train text towers.

Each record draws its templates from a generator seeded by (seed, record id): the same table and seed
give the same prompts in any order or worker. A positive parent implied by a positive child is not
repeated ("nodule", not "nodule ... lung lesion ... lung opacity"); at most ``max_negatives`` negatives
are stated. The wording is one the rule-based labeller reads back to the same labels.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence

import numpy as np

from radlab.data.records import RecordTable
from radlab.data.taxonomy import BY_NAME, FINDING_NAMES, NEGATIVE, POSITIVE, UNCERTAIN, ancestors

WORDS: dict[str, str] = {"pleural_other": "pleural abnormality"}
POSITIVE_TEMPLATES = ("There is {x}.", "{X} is present.", "Findings consistent with {x}.", "The radiograph shows {x}.")
UNCERTAIN_TEMPLATES = ("Possible {x}.", "{X} cannot be excluded.", "Findings may represent {x}.")
NEGATIVE_TEMPLATES = ("No {x}.", "There is no {x}.", "No evidence of {x}.")
NORMAL_TEMPLATES = ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.",
                    "The lungs are clear and the heart size is normal.")


def words(name: str) -> str:
    return WORDS.get(name, name.replace("_", " "))


def _fill(template: str, name: str) -> str:
    text = words(name)
    return template.format(x=text, X=text[0].upper() + text[1:])


def _join(names: list[str]) -> str:
    parts = [words(n) for n in names]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def prompt_from_labels(labels: Mapping[str, float], rng: random.Random, max_negatives: int = 3) -> str:
    """One report-like text: positives, then uncertain findings, then a few negatives ('' if no labels)."""
    known = {n: float(v) for n, v in labels.items() if n != "no_finding" and v is not None and not math.isnan(v)}
    implied = {p for n, v in known.items() if v == POSITIVE and n in BY_NAME for p in ancestors(n)}
    positives = [n for n, v in known.items() if v == POSITIVE and n not in implied]
    uncertain = [n for n, v in known.items() if v == UNCERTAIN and n not in implied]
    negatives = sorted(n for n, v in known.items() if v == NEGATIVE)
    rng.shuffle(positives)
    rng.shuffle(uncertain)
    sentences = [_fill(rng.choice(POSITIVE_TEMPLATES), n) for n in positives]
    sentences += [_fill(rng.choice(UNCERTAIN_TEMPLATES), n) for n in uncertain]
    if not positives and not uncertain and labels.get("no_finding") == POSITIVE:
        sentences.append(rng.choice(NORMAL_TEMPLATES))
    if negatives:
        chosen = rng.sample(negatives, min(max_negatives, len(negatives)))
        sentences.append(rng.choice(NEGATIVE_TEMPLATES).format(x=_join(chosen)))
    return " ".join(sentences)


def record_rng(seed: int, record_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def table_prompts(table: RecordTable, seed: int = 0, max_negatives: int = 3) -> list[str]:
    """A prompt per record from its label columns."""
    values = table.labels(FINDING_NAMES)
    return [prompt_from_labels(dict(zip(FINDING_NAMES, row.tolist(), strict=True)),
                               record_rng(seed, rid), max_negatives)
            for rid, row in zip(table.frame["id"], values, strict=True)]


def add_prompts(table: RecordTable, seed: int = 0) -> RecordTable:
    """Write prompts into ``report`` (and ``findings``) of records that have no report text."""
    frame = table.frame.copy()
    empty = (frame["report"].str.strip() == "").to_numpy()
    prompts = np.array(table_prompts(table.subset(empty), seed), dtype=object)
    if len(prompts):
        frame.loc[empty, "findings"] = [f"{p}" for p in prompts]
        frame.loc[empty, "report"] = [f"FINDINGS: {p}" if p else "" for p in prompts]
    return RecordTable(frame, table.root)


def compose_prompts(row: Sequence[float] | np.ndarray, class_names: Sequence[str], rng: random.Random) -> str:
    """A prompt for one sample from its label vector aligned with ``class_names`` (as used by the CLIP-style
    objectives for samples without a report); "Chest radiograph." when no label is known."""
    labels = dict(zip(class_names, (float(v) for v in row), strict=True))
    return prompt_from_labels(labels, rng) or "Chest radiograph."
