"""Retrieval by chunks of queries, so a 100k x 100k similarity matrix never exists at once.

Which keys are correct for a query is a sparse [queries, keys] 0/1 matrix (``crossmodal`` builds it from text
content: an image's correct keys are the distinct texts of its study), so an image can have several correct
sentences and a sentence several correct images.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from scipy import sparse

CHUNK = 4096
TIE_TOLERANCE = 1e-6  # on dot products of unit vectors: float32 noise, not a real difference


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()


@torch.no_grad()
def chunked_topk(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = CHUNK,
                 exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys by dot product per query: (scores [Q, k], indices [Q, k]), best first.

    ``exclude`` (optional, [Q]) is a key index per query to skip (e.g. the query itself)."""
    q, kk = _as_tensor(queries), _as_tensor(keys)
    k = min(k, kk.shape[0] - (1 if exclude is not None else 0))
    scores, indices = [], []
    for start in range(0, q.shape[0], chunk):
        sims = q[start:start + chunk] @ kk.T
        if exclude is not None:
            rows = torch.arange(sims.shape[0])
            sims[rows, torch.as_tensor(exclude[start:start + chunk])] = -torch.inf
        top = sims.topk(k, dim=1)
        scores.append(top.values.numpy())
        indices.append(top.indices.numpy())
    return np.concatenate(scores), np.concatenate(indices)


def membership(owner: np.ndarray, n: int) -> sparse.csr_array:
    """[len(owner), n] 0/1 matrix with row i's one at column ``owner[i]`` (e.g. each image's study)."""
    owner = np.asarray(owner, dtype=np.int64)
    return sparse.csr_array((np.ones(len(owner), np.int64), (np.arange(len(owner)), owner)), shape=(len(owner), n))


@torch.no_grad()
def correct_key_positions(queries: np.ndarray, keys: np.ndarray, relevant: sparse.sparray | sparse.spmatrix,
                          chunk: int = CHUNK,
                          scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query, where its best-scoring correct key (nonzero in ``relevant``, [Q, K]) lands: (keys scoring
    higher, incorrect keys tying with it within ``TIE_TOLERANCE``, correct keys tying with it, itself included).
    ``metrics.recall_at_k`` turns them into expected recall under random tie-breaking, so a collapsed tower or
    two different texts the tower cannot tell apart do not count as hits, and a query with several correct keys
    (a study's images) gets its chance, not less. Scores are the dot products of ``queries`` and ``keys``, or
    the given [Q, K] ``scores`` (e.g. word-region similarities)."""
    relevant = sparse.csr_array(relevant).astype(bool)  # a chunk's dense mask: one byte per key
    q, kk = _as_tensor(queries), _as_tensor(keys)
    if relevant.shape != (q.shape[0], kk.shape[0] if scores is None else np.shape(scores)[1]):
        raise ValueError(f"relevant is {relevant.shape}, not queries x keys")
    above, tied, tied_correct = [], [], []
    for start in range(0, q.shape[0], chunk):
        sims = _as_tensor(scores[start:start + chunk]) if scores is not None else q[start:start + chunk] @ kk.T
        correct = torch.from_numpy(relevant[start:start + chunk].toarray())
        if not correct.any(1).all():
            raise ValueError("every query needs at least one correct key")
        best = sims.masked_fill(~correct, -torch.inf).max(1).values[:, None]
        above.append((sims > best + TIE_TOLERANCE).sum(1).numpy())
        tie = (sims - best).abs() <= TIE_TOLERANCE
        tied.append((tie & ~correct).sum(1).numpy())
        tied_correct.append((tie & correct).sum(1).numpy())
    return np.concatenate(above), np.concatenate(tied), np.concatenate(tied_correct)


SECTION = re.compile(r"\b(FINDINGS|IMPRESSION|INDICATION|COMPARISON|HISTORY|TECHNIQUE)\s*:", re.IGNORECASE)


def split_sentences(report: str) -> list[str]:
    """Sentences of a report with section headers removed; empty pieces dropped."""
    text = SECTION.sub(" ", report)
    pieces = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in pieces if len(p.strip()) > 1 and re.search(r"[A-Za-z]", p)]
