"""The text probe: on the bundled real IU X-ray reports (expert MeSH tags) a tiny random-init text tower's frozen
report features must predict the findings of held-out patients well above chance; AUCs are re-computed with
scikit-learn, one report per study is probed, and encoders without a text tower are skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from radlab.data.bundled import load_bundled
from radlab.data.records import RecordTable
from radlab.data.splits import DEFAULT_FRACTIONS, assign_splits
from radlab.evaluation.context import EvalContext
from radlab.evaluation.features import extract_text
from radlab.evaluation.runner import evaluate
from radlab.evaluation.text_probe import report_rows
from radlab.models.build import ModelConfig, build_encoder
from radlab.models.encoder import RadEncoder
from radlab.models.tokenizer import train_wordpiece
from radlab.train.setup import training_labels


@pytest.fixture(scope="module")
def iu_table(data_root: Path) -> RecordTable:
    return assign_splits(load_bundled(data_root)["iu_xray_reports"], DEFAULT_FRACTIONS, seed=0)


@pytest.fixture(scope="module")
def iu_encoder(iu_table: RecordTable, tiny_model_config: ModelConfig) -> RadEncoder:
    torch.manual_seed(0)
    return build_encoder(tiny_model_config, train_wordpiece(iu_table.split("train").texts(), vocab_size=400)).eval()


@pytest.fixture(scope="module")
def iu_labels(iu_table: RecordTable) -> list[str]:
    return training_labels(iu_table.split("train"), None)


@pytest.fixture(scope="module")
def iu_probe(iu_encoder: RadEncoder, iu_table: RecordTable, iu_labels: list[str]) -> dict:
    return evaluate(iu_encoder, iu_table, ["text_probe"], iu_labels, n_boot=100)["tasks"]["text_probe"]


def test_report_features_predict_expert_findings_of_held_out_patients(iu_probe: dict) -> None:
    assert "skipped" not in iu_probe, iu_probe
    assert iu_probe["kind"] == "pooled" and iu_probe["n_reports"]["test"] > 500
    assert iu_probe["macro_auc"] > 0.75
    ci = iu_probe["macro_auc_ci"]
    assert ci["unit"] == "patient" and 0.5 < ci["ci_low"] <= iu_probe["macro_auc"] <= ci["ci_high"]
    assert iu_probe["macro_auc"] == pytest.approx(np.mean(list(iu_probe["auc"].values())))


def test_probe_auc_matches_a_plain_scikit_learn_fit(iu_probe: dict, iu_encoder: RadEncoder, iu_table: RecordTable,
                                                    iu_labels: list[str]) -> None:
    """One finding, C fixed at the value the probe chose by validation AUC among the same grid."""
    finding = "cardiomegaly"
    ctx = EvalContext(iu_encoder, iu_table, iu_labels)
    k = iu_labels.index(finding)
    texts, labels = iu_table.texts(), iu_table.labels(iu_labels)[:, k]
    features, targets = {}, {}
    for split in ("train", "val", "test"):
        rows = report_rows(ctx, split)
        features[split] = extract_text(iu_encoder, [texts[i] for i in rows], kind="pooled")
        targets[split] = labels[rows]
    scaler = StandardScaler().fit(features["train"])
    known = {s: np.isin(y, (0, 1)) for s, y in targets.items()}
    x = {s: scaler.transform(v)[known[s]] for s, v in features.items()}
    y = {s: v[known[s]] for s, v in targets.items()}
    best = max((0.01, 0.1, 1.0, 10.0),
               key=lambda c: roc_auc_score(y["val"], _fit(x["train"], y["train"], c).decision_function(x["val"])))
    expected = roc_auc_score(y["test"], _fit(x["train"], y["train"], best).decision_function(x["test"]))
    assert iu_probe["auc"][finding] == pytest.approx(expected, abs=1e-6)


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=0).fit(x, y)


def test_joint_space_embeddings_can_be_probed_instead(iu_encoder: RadEncoder, iu_table: RecordTable,
                                                      iu_labels: list[str]) -> None:
    probe = evaluate(iu_encoder, iu_table, ["text_probe"], iu_labels, n_boot=20,
                     options={"text_probe": {"kind": "embedding"}})["tasks"]["text_probe"]
    assert probe["kind"] == "embedding" and probe["macro_auc"] > 0.6
    texts = iu_table.texts()[:3]
    assert extract_text(iu_encoder, texts, kind="embedding").shape[1] == iu_encoder.embed_dim
    assert extract_text(iu_encoder, texts, kind="pooled").shape[1] == iu_encoder.text_tower.embed_dim
    with pytest.raises(ValueError, match="text_probe.kind must be one of"):
        evaluate(iu_encoder, iu_table, ["text_probe"], iu_labels, options={"text_probe": {"kind": "tokens"}})


def test_one_report_per_study(tiny_encoder: RadEncoder, split_table: RecordTable) -> None:
    """A study's second image (same study, same report, here a lateral added to ten phantom studies) is not
    probed again."""
    frame = split_table.frame
    lateral = frame[frame["split"] == "train"].head(10).assign(id=lambda f: f["id"] + "_lateral")
    table = RecordTable(pd.concat([frame, lateral], ignore_index=True), split_table.root)
    ctx = EvalContext(tiny_encoder, table, ["cardiomegaly"])
    rows = report_rows(ctx, "train")
    assert len(ctx.text_rows("train")) == len(rows) + 10
    assert set(table.frame["study_id"].to_numpy()[rows]) == set(table.frame["study_id"][table.frame["split"] == "train"])


def test_an_encoder_without_a_text_tower_is_skipped_with_a_reason(split_table: RecordTable,
                                                                  tiny_model_config: ModelConfig) -> None:
    image_only = build_encoder(tiny_model_config.model_copy(update={"text_tower": None})).eval()
    probe = evaluate(image_only, split_table, ["text_probe"], ["cardiomegaly"], n_boot=10)["tasks"]["text_probe"]
    assert "needs a text tower" in probe["skipped"]
