"""Which image-text similarity zero-shot and retrieval score with (their ``similarity`` option).

- ``global`` (default, every encoder): the cosine of the joint embeddings.
- ``local``: the word-region similarity of an encoder that carries a word-region matcher
  (``RadEncoder.local_match``: trained with GLoRIA's objective, or GLoRIA's own checkpoint), as GLoRIA's
  evaluation computes it (``get_local_similarities``): τ2 times the cosine of the report's best-matched word.
- ``both``: GLoRIA's evaluation (``gloria/gloria.py`` ``get_similarities``): the mean of the global cosine and
  that local similarity, as they are. Its zero-shot classification then standardises each class over the
  images it classifies before the argmax (``zero_shot_classification``, "normalize across class"):
  ``decision_scores`` does so for the top-1 decisions (single-label, 5x200 exclusive); AUCs are unchanged by it.

``global`` keeps one protocol for every encoder; ``both`` reproduces how GLoRIA reports its own zero-shot
and retrieval, so compare GLoRIA-style encoders with both settings and others with ``global``.
"""

from __future__ import annotations

import numpy as np

from radlab.evaluation.context import EvalContext, TaskSkipped

SIMILARITIES = ("global", "local", "both")


def similarity_kind(ctx: EvalContext) -> str:
    """The task's ``similarity`` option, checked against the encoder."""
    kind = str(ctx.option("similarity", "global"))
    if kind not in SIMILARITIES:
        raise ValueError(f"{ctx.task}.similarity must be one of {SIMILARITIES}, got {kind!r}")
    if kind != "global" and ctx.encoder.local_match is None:
        raise TaskSkipped(f"similarity={kind} needs a word-region matcher (an encoder trained with GLoRIA's "
                          "objective, or GLoRIA's checkpoint); this encoder has none")
    return kind


def decision_scores(class_scores: np.ndarray, kind: str) -> np.ndarray:
    """The [N, K] class scores a top-1 decision over these N images reads: with ``both``, each class
    standardised over the images first, as GLoRIA's zero-shot classification does; as they are otherwise."""
    if kind != "both" or len(class_scores) < 2:
        return class_scores
    spread = class_scores.std(0)
    return (class_scores - class_scores.mean(0)) / np.where(spread > 0, spread, 1.0)


def combine(global_scores: np.ndarray, local_scores: np.ndarray, kind: str) -> np.ndarray:
    """[N images, ...] scores of the chosen kind from both similarities of the same shape."""
    if kind == "global":
        return global_scores
    if kind == "local":
        return local_scores
    return (global_scores + local_scores) / 2

