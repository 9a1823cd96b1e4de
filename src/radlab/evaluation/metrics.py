"""Metrics implemented here (not borrowed), cross-checked in tests against scikit-learn where it has them
and against hand-computed cases for BLEU and ROUGE-L."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

RECALL_KS = (1, 5, 10, 50)


def _binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels as booleans and finite scores as float64, or a ValueError saying what is wrong."""
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("ranking metrics take 0/1 labels; drop unannotated (NaN) and uncertain (-1) entries first")
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("ranking metrics got non-finite scores (a diverged model?); they have no order")
    return labels.astype(bool), scores


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half); NaN if one class.

    Labels must be 0/1: unannotated (NaN) and uncertain (-1) entries are the caller's to drop; scores must
    be finite."""
    labels, scores = _binary(labels, scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    boundaries = np.flatnonzero(np.diff(scores[order])) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    tie_group = np.zeros(len(scores), dtype=np.int64)
    tie_group[boundaries] = 1
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(tie_group)]  # tied scores share their mean rank
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall step curve as scikit-learn computes it: over distinct score thresholds,
    highest first (tied scores enter together), the recall each adds times the precision there. Chance is the
    prevalence; NaN if one class (as ``roc_auc``, so both average the same findings). Same input rules."""
    labels, scores = _binary(labels, scores)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    last = np.append(np.flatnonzero(np.diff(scores[order])), len(order) - 1)  # last item of each tie group
    hits = np.cumsum(labels[order])[last]
    precision, recall = hits / (last + 1), hits / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def macro_mean(metric: Callable[[np.ndarray, np.ndarray], float], labels: np.ndarray, scores: np.ndarray,
               strict: bool = False) -> float:
    """Mean of ``metric`` over columns, each over its annotated (0/1) entries; columns with one class are
    skipped, or with ``strict`` make the result NaN (a bootstrap resample must average the same findings as the
    estimate, so it is dropped rather than averaged over fewer)."""
    values = []
    for k in range(labels.shape[1]):
        known = np.isin(labels[:, k], (0, 1))
        value = metric(labels[known, k], scores[known, k])
        if math.isnan(value) and strict:
            return float("nan")
        if not math.isnan(value):
            values.append(value)
    return float(np.mean(values)) if values else float("nan")


def macro_auc(labels: np.ndarray, scores: np.ndarray, strict: bool = False) -> float:
    """``macro_mean`` of ``roc_auc``."""
    return macro_mean(roc_auc, labels, scores, strict)


def macro_ap(labels: np.ndarray, scores: np.ndarray, strict: bool = False) -> float:
    """``macro_mean`` of ``average_precision``."""
    return macro_mean(average_precision, labels, scores, strict)


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float((truth == predicted).mean()) if len(truth) else float("nan")


def f1_binary(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of binary arrays of any shape (micro over all entries); 0 when there are no positives at all."""
    truth, predicted = np.asarray(truth).astype(bool), np.asarray(predicted).astype(bool)
    tp = float((truth & predicted).sum())
    denom = float(truth.sum() + predicted.sum())
    return 2.0 * tp / denom if denom else 0.0


def mean_absolute_error(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(truth, np.float64) - np.asarray(predicted, np.float64))))


def r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth, np.float64), np.asarray(predicted, np.float64)
    total = float(((truth - truth.mean()) ** 2).sum())
    residual = float(((truth - predicted) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")


def dice_iou(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample Dice and IoU of binary masks [N, ...]; both are 1 when truth and prediction are empty."""
    t = np.asarray(truth).astype(bool).reshape(len(truth), -1)
    p = np.asarray(predicted).astype(bool).reshape(len(predicted), -1)
    inter = (t & p).sum(1).astype(np.float64)
    sums = (t.sum(1) + p.sum(1)).astype(np.float64)
    union = sums - inter
    dice = np.where(sums > 0, 2 * inter / np.maximum(sums, 1), 1.0)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return dice, iou


def expected_hits(above: np.ndarray, tied: np.ndarray, k: int, tied_correct: np.ndarray | None = None) -> np.ndarray:
    """Per query, the chance that a correct key is in the top ``k`` when ``above`` keys score higher than the
    best correct key and ``tied`` incorrect and ``tied_correct`` correct keys (the best one included; 1 when
    not given) score the same as it, ties broken uniformly at random: with m = k - above places left in the tie
    group, 1 - C(tied, m) / C(tied + tied_correct, m)."""
    above, tied = np.asarray(above, np.float64), np.asarray(tied, np.float64)
    correct = np.ones_like(tied) if tied_correct is None else np.asarray(tied_correct, np.float64)
    places = np.clip(k - above, 0.0, None)
    miss = np.ones_like(tied)
    for i in range(1, int(correct.max(initial=1)) + 1):  # C(t, m) / C(t + c, m) = prod_i (t - m + i) / (t + i)
        miss *= np.where(i <= correct, np.clip((tied - places + i) / (tied + i), 0.0, 1.0), 1.0)
    return np.where(places > 0, 1.0 - miss, 0.0)


def recall_at_k(above: np.ndarray, tied: np.ndarray, ks: Sequence[int] = RECALL_KS,
                tied_correct: np.ndarray | None = None) -> dict[str, float]:
    """Expected R@K and the median of expected ranks of the first correct key (1 + above + tied /
    (tied_correct + 1)): an encoder that scores every key alike gets chance recall, not perfect recall."""
    correct = np.ones(len(np.asarray(tied))) if tied_correct is None else np.asarray(tied_correct, np.float64)
    out = {f"R@{k}": float(expected_hits(above, tied, k, correct).mean()) for k in ks}
    out["median_rank"] = float(np.median(1 + np.asarray(above) + np.asarray(tied) / (correct + 1)))
    return out


def tokenize_text(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (the tokenisation BLEU and ROUGE-L are computed on)."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(reference: str, hypothesis: str, max_n: int = 4) -> np.ndarray:
    """Sufficient statistics of one pair: clipped matches and totals per n, reference and hypothesis length."""
    ref, hyp = tokenize_text(reference), tokenize_text(hypothesis)
    matches, totals = [], []
    for n in range(1, max_n + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        matches.append(sum(min(c, r[g]) for g, c in h.items()))
        totals.append(max(len(hyp) - n + 1, 0))
    return np.array([*matches, *totals, len(ref), len(hyp)], dtype=np.float64)


def bleu_from_stats(stats: np.ndarray, max_n: int = 4) -> float:
    """Corpus BLEU from summed ``bleu_stats`` (so a bootstrap resample is a sum, not a re-tokenisation)."""
    matches, totals = stats[:max_n], stats[max_n:2 * max_n]
    ref_len, hyp_len = stats[2 * max_n], stats[2 * max_n + 1]
    if hyp_len == 0 or matches.min() == 0:
        return 0.0
    log_precision = float(np.mean(np.log(matches / totals)))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return float(brevity * math.exp(log_precision))


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002): clipped n-gram precisions pooled over the corpus, geometric mean
    for n = 1..max_n, brevity penalty on total lengths; one reference per hypothesis; 0 if any precision is 0."""
    stats = [bleu_stats(r, h, max_n) for r, h in zip(references, hypotheses, strict=True)]
    return bleu_from_stats(np.sum(stats, axis=0), max_n) if stats else 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, hypothesis: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure (Lin 2004) from the longest common subsequence of tokens."""
    ref, hyp = tokenize_text(reference), tokenize_text(hypothesis)
    lcs = _lcs(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return float((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
