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
# no_finding is itself a negation: "no {no finding}" would repeat the positive, so it has its own pair of
# wordings, a normal study against an abnormal one.
NORMAL_PAIRS = (("no acute cardiopulmonary abnormality.", "acute cardiopulmonary abnormality."),
                ("normal chest radiograph.", "abnormal chest radiograph."),
                ("the lungs are clear and the heart size is normal.", "there is an abnormality in the chest."),
                ("no active disease.", "findings of active disease."))


def composed(name: str, seed: int, size: int = ENSEMBLE_SIZE) -> tuple[list[str], list[str]]:
    """``size`` prompt pairs drawn (seeded, per finding) from prefixes x templates (x ``NORMAL_PAIRS`` for
    no_finding)."""
    words = display_name(name)
    bodies = NORMAL_PAIRS if name == "no_finding" else [
        (positive.format(words), negative.format(words))
        for positive, negative in zip(POSITIVE_TEMPLATES, NEGATIVE_TEMPLATES, strict=True)]
    rng = random.Random(f"{seed}:{name}")
    pairs = [(p, b) for p in PREFIXES for b in range(len(bodies))]
    chosen = rng.sample(pairs, min(size, len(pairs)))
    return ([_sentence(p, bodies[b][0]) for p, b in chosen], [_sentence(p, bodies[b][1]) for p, b in chosen])


def _sentence(prefix: str, body: str) -> str:
    text = prefix + body
    return text[0].upper() + text[1:]


def prompts(name: str, mode: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """(positive prompts, negative prompts) for one finding in one mode."""
    words = display_name(name)
    if mode == "ensemble":
        return composed(name, seed)
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
    if name == "no_finding":
        pairs = NORMAL_PAIRS[:1] if mode == "names" else NORMAL_PAIRS
        return [_sentence("FINDINGS: ", a) for a, _ in pairs], [_sentence("FINDINGS: ", b) for _, b in pairs]
    if mode == "names":
        return [f"FINDINGS: {words}."], [f"FINDINGS: no {words}."]
    description = BY_NAME[name].description
    return [f"FINDINGS: {words}, {description}."], [f"FINDINGS: no {words}; no {description}."]
