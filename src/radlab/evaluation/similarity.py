"""Which image-text similarity zero-shot and retrieval score with (their ``similarity`` option).

- ``global`` (default, every encoder): the cosine of the joint embeddings.
- ``local``: the word-region similarity Z of an encoder that carries a word-region matcher
  (``RadEncoder.local_match``: trained with GLoRIA's objective, or GLoRIA's own checkpoint).
- ``both``: GLoRIA's evaluation (``gloria/gloria.py`` ``get_similarities``): global and local similarities,
  each standardised over the images (per text: minus the mean, over the standard deviation), averaged.

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


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each column (text) over the rows (images): zero mean, unit standard deviation; a constant column
    becomes zeros."""
    std = scores.std(axis=0, keepdims=True)
    return (scores - scores.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1.0)


def combine(global_scores: np.ndarray, local_scores: np.ndarray, kind: str) -> np.ndarray:
    """[N images, ...] scores of the chosen kind from both similarities of the same shape."""
    if kind == "global":
        return global_scores
    if kind == "local":
        return local_scores
    shape = global_scores.shape
    flat = [standardise(s.reshape(len(s), -1)) for s in (global_scores, local_scores)]
    return ((flat[0] + flat[1]) / 2).reshape(shape)

