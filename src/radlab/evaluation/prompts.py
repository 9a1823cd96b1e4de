"""Zero-shot prompts: class names, a seeded ensemble of composed prompts, or short clinical descriptions.

Each mode gives, per finding, a list of positive and a list of negative prompts; embeddings of a list are
averaged (then re-normalised) into one class vector.
"""

from __future__ import annotations

import random

from radlab.data.taxonomy import BY_NAME, display_name

PROMPT_MODES = ("names", "ensemble", "descriptions")
PREFIXES = ("", "FINDINGS: ", "IMPRESSION: ", "Chest radiograph: ", "Frontal chest x-ray shows ")
POSITIVE_TEMPLATES = ("{}.", "there is {}.", "{} is present.", "findings consistent with {}.",
                      "evidence of {}.", "{} is seen.")
NEGATIVE_TEMPLATES = ("no {}.", "there is no {}.", "no evidence of {}.", "{} is absent.",
                      "without {}.", "no radiographic signs of {}.")
ENSEMBLE_SIZE = 8


def composed(name: str, seed: int, size: int = ENSEMBLE_SIZE) -> tuple[list[str], list[str]]:
    """``size`` prompt pairs drawn (seeded, per finding) from prefixes x templates."""
    words = display_name(name)
    rng = random.Random(f"{seed}:{name}")
    pairs = [(p, t) for p in PREFIXES for t in range(len(POSITIVE_TEMPLATES))]
    chosen = rng.sample(pairs, min(size, len(pairs)))
    positive = [_sentence(p, POSITIVE_TEMPLATES[t].format(words)) for p, t in chosen]
    negative = [_sentence(p, NEGATIVE_TEMPLATES[t].format(words)) for p, t in chosen]
    return positive, negative


def _sentence(prefix: str, body: str) -> str:
    text = prefix + body
    return text[0].upper() + text[1:]


def prompts(name: str, mode: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """(positive prompts, negative prompts) for one finding in one mode."""
    words = display_name(name)
    if mode == "names":
        return [f"FINDINGS: {words}."], [f"FINDINGS: no {words}."]
    if mode == "ensemble":
        return composed(name, seed)
    if mode == "descriptions":
        description = BY_NAME[name].description
        return [f"FINDINGS: {words}, {description}."], [f"FINDINGS: no {words}; no {description}."]
    raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
