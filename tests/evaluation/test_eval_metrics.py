"""radlab's own metrics against scikit-learn (AUC, F1, Dice = F1, IoU = Jaccard, MAE, R^2, accuracy) and
against hand-computed cases (BLEU, ROUGE-L, R@K)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn import metrics as skm

from radlab.evaluation import metrics as m


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + y, 1)  # rounding makes many ties
    assert m.roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.08).astype(int)  # a rare finding, where AP and AUC part ways
    scores = np.round(rng.normal(size=300) + y, 1)
    assert m.average_precision(y, scores) == pytest.approx(skm.average_precision_score(y, scores), abs=1e-12)
    assert m.average_precision(y, -scores) < y.mean() + 0.05 < m.average_precision(y, scores)
    assert math.isnan(m.average_precision(np.zeros(4), np.arange(4)))
    assert math.isnan(m.average_precision(np.ones(4), np.arange(4))), "undefined where AUC is: same findings"
    with pytest.raises(ValueError, match="0/1 labels"):
        m.average_precision(np.array([1.0, -1.0]), np.array([0.3, 0.2]))


def test_auc_single_class_is_nan_and_macro_skips_it() -> None:
    assert math.isnan(m.roc_auc(np.ones(5), np.arange(5)))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (100, 3)).astype(float)
    y[:, 2] = 1
    y[:10, 0] = np.nan
    s = rng.normal(size=(100, 3))
    known = ~np.isnan(y[:, 0])
    expected = np.mean([skm.roc_auc_score(y[known, 0], s[known, 0]), skm.roc_auc_score(y[:, 1], s[:, 1])])
    assert m.macro_auc(y, s) == pytest.approx(expected)


def test_classification_and_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    truth, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert m.accuracy(truth, pred) == pytest.approx(skm.accuracy_score(truth, pred))
    yb, pb = rng.integers(0, 2, (40, 6)), rng.integers(0, 2, (40, 6))
    assert m.f1_binary(yb, pb) == pytest.approx(skm.f1_score(yb, pb, average="micro"))
    yt, yp = rng.normal(50, 10, 80), rng.normal(50, 10, 80)
    assert m.mean_absolute_error(yt, yp) == pytest.approx(skm.mean_absolute_error(yt, yp))
    assert m.r2(yt, yp) == pytest.approx(skm.r2_score(yt, yp))


def test_dice_is_f1_and_iou_is_jaccard_per_mask() -> None:
    rng = np.random.default_rng(2)
    truth, pred = rng.random((6, 16, 16)) > 0.6, rng.random((6, 16, 16)) > 0.5
    dice, iou = m.dice_iou(truth, pred)
    for i in range(6):
        assert dice[i] == pytest.approx(skm.f1_score(truth[i].ravel(), pred[i].ravel()))
        assert iou[i] == pytest.approx(skm.jaccard_score(truth[i].ravel(), pred[i].ravel()))
    empty = np.zeros((1, 4, 4), bool)
    assert m.dice_iou(empty, empty)[0][0] == 1.0


def test_recall_at_k_and_median_rank() -> None:
    out = m.recall_at_k(np.array([1, 2, 6, 11, 60]) - 1, np.zeros(5))
    assert out == {"R@1": 0.2, "R@5": 0.4, "R@10": 0.6, "R@50": 0.8, "median_rank": 6.0}
    # 2 keys above, 3 tied: the correct key sits at rank 3, 4, 5 or 6 with equal chance
    assert m.expected_hits(np.array([2]), np.array([3]), 4)[0] == 0.5
    assert m.recall_at_k(np.array([2]), np.array([3]), ks=(2, 6))["R@2"] == 0.0
    assert m.recall_at_k(np.array([2]), np.array([3]), ks=(6,)) == {"R@6": 1.0, "median_rank": 4.5}


def test_auc_refuses_unannotated_labels_and_strict_macro_refuses_one_class_columns() -> None:
    with pytest.raises(ValueError, match="0/1 labels"):
        m.roc_auc(np.array([1.0, 0.0, np.nan]), np.array([0.3, 0.2, 0.1]))
    labels = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], dtype=float)
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.4]])
    assert m.macro_auc(labels, scores) == 1.0
    assert np.isnan(m.macro_auc(labels, scores, strict=True))


def test_bleu_hand_computed() -> None:
    assert m.corpus_bleu(["the cat is on the mat"], ["the cat is on the mat"]) == pytest.approx(1.0)
    # all n-gram precisions 1, hypothesis 5 tokens vs reference 6: brevity penalty exp(1 - 6/5)
    assert m.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the"]) == pytest.approx(math.exp(-0.2))
    # precisions 5/6, 3/5, 2/4, 1/3, equal lengths
    assert m.corpus_bleu(["a b c d e f"], ["a b c d x f"]) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # corpus pooling: 9/10, 6/8, 4/6, 2/4
    pooled = m.corpus_bleu(["a b c d e f", "a b c d"], ["a b c d x f", "a b c d"])
    assert pooled == pytest.approx((9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25)
    assert m.corpus_bleu(["a b c d"], ["x y z w"]) == 0.0
    stats = m.bleu_stats("a b c d e f", "a b c d x f") + m.bleu_stats("a b c d", "a b c d")
    assert m.bleu_from_stats(stats) == pytest.approx(pooled)


def test_rouge_l_hand_computed() -> None:
    # LCS(a b c d e, a c e f) = a c e: P = 3/4, R = 3/5, F = 2PR / (P + R)
    assert m.rouge_l("a b c d e", "a c e f") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m.rouge_l("No pleural effusion.", "no pleural effusion .") == pytest.approx(1.0)
    assert m.rouge_l("a b", "c d") == 0.0


def test_zero_shot_scores_keep_their_order_where_a_softmax_saturates(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from radlab.evaluation import zero_shot

    gaps = np.linspace(0.2, 0.8, 7)  # cosine gaps between positive and negative prompt, all past float32 softmax
    images = np.stack([np.cos(gaps), np.sin(gaps)], 1).astype(np.float32)
    prompts = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # one finding: positive, negative
    monkeypatch.setattr(zero_shot, "class_vectors", lambda ctx, names, mode: prompts)
    ctx = SimpleNamespace(image_features=lambda split, kind: images, option=lambda key, default: default)
    binary, _ = zero_shot.prompt_scores(ctx, ["cardiomegaly"], "names")  # type: ignore[arg-type]
    assert len(np.unique(binary[:, 0])) == 7 and (np.diff(binary[:, 0]) < 0).all()


@pytest.mark.parametrize("mode", ["names", "ensemble", "descriptions"])
def test_negative_prompts_never_restate_the_positive(mode: str) -> None:
    from radlab.data.taxonomy import FINDING_NAMES
    from radlab.evaluation.prompts import prompts

    for name in FINDING_NAMES:
        positive, negative = prompts(name, mode, seed=3)
        assert positive and len(positive) == len(negative)
        assert not any("no no " in text.lower() for text in negative)
    positive, negative = prompts("no_finding", mode, seed=3)  # itself a negation: normal vs abnormal study
    assert all("abnormal" in t.lower() or "active disease" in t.lower() for t in negative)
    assert not any(re.search(r"\b(no acute|normal chest|no finding)", t.lower()) for t in negative)
