"""Fine-tuning selects its model on the validation split: best state kept and restored, early stopping, cosine
schedule, and a stated fall-back to the last step when validation cannot score (phantoms, tiny budgets)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radlab.data.records import RecordTable, label_column
from radlab.evaluation import finetune as ft_module
from radlab.evaluation.context import EvalContext
from radlab.evaluation.runner import evaluate
from radlab.models.encoder import RadEncoder
from radlab.train.optim import cosine_with_warmup
from radlab.train.setup import training_labels


@pytest.fixture(scope="module")
def labels(split_table: RecordTable) -> list[str]:
    return training_labels(split_table.split("train"), None)


def run(encoder: RadEncoder, table: RecordTable, labels: list[str], **options: object) -> dict:
    return evaluate(encoder, table, ["finetune"], labels, n_boot=10, options={"finetune": options})["tasks"]["finetune"]


def test_finetune_selects_on_val_and_beats_chance(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                  labels: list[str]) -> None:
    ft = run(tiny_encoder, split_table, labels, steps=30, eval_every=10, batch_size=16)
    assert ft["selection"] == "best validation macro AUC"
    assert 0 < ft["best_step"] <= ft["steps_run"] <= ft["steps"] == 30 and ft["best_step"] % 10 == 0
    assert 0 <= ft["val_auc_best"] <= 1
    assert ft["macro_auc"] > 0.55


def test_finetune_stops_early_without_improvement(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                  labels: list[str]) -> None:
    """At lr 0 the weights never move, so validation AUC never improves after the first evaluation."""
    ft = run(tiny_encoder, split_table, labels, steps=30, eval_every=5, patience=2, lr=0.0, batch_size=16)
    assert ft["best_step"] == 5 and ft["steps_run"] == 15 < ft["steps"]


def test_finetune_restores_the_best_validation_state(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                     labels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation AUCs are scripted (best at step 2 of 5); the test split must be scored with step 2's weights."""
    ctx = EvalContext(tiny_encoder, split_table, labels, n_boot=10, task="finetune",
                      options={"finetune": {"steps": 8, "eval_every": 1, "patience": 3, "batch_size": 16}})
    n_val = len(ctx.rows("val"))
    scripted = iter([0.6, 0.8, 0.7, 0.75, 0.5, 0.9])
    states: list[dict[str, torch.Tensor]] = []
    outputs: list[np.ndarray] = []
    predict = ft_module.predict

    def val_auc(y: np.ndarray, scores: np.ndarray) -> float:
        assert len(y) == len(scores) == n_val
        return next(scripted)

    def spy(model: torch.nn.Module, *args: object) -> np.ndarray:
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        outputs.append(predict(model, *args))
        return outputs[-1]

    monkeypatch.setattr(ft_module, "macro_auc", val_auc)
    monkeypatch.setattr(ft_module, "predict", spy)
    ft = ft_module.finetune(ctx)
    assert (ft["best_step"], ft["val_auc_best"], ft["steps_run"]) == (2, 0.8, 5)
    assert len(states) == 6  # five validation passes, then the test split
    best, last, tested = states[1], states[4], states[5]
    assert any(not torch.equal(best[k], last[k]) for k in best)  # training moved the weights after step 2
    assert all(torch.equal(best[k], tested[k]) for k in best)
    y_test = ctx.labels("test")
    for j, name in enumerate(ft["auc"]):
        y = y_test[:, labels.index(name)]
        known = np.isin(y, (0, 1))
        assert ft["auc"][name] == pytest.approx(roc_auc_score(y[known], outputs[-1][known, j]))


@pytest.mark.parametrize("val", ["absent", "one_class"])
def test_finetune_falls_back_to_last_step_without_val(tiny_encoder: RadEncoder, split_table: RecordTable,
                                                      labels: list[str], val: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """With selection, lr 0 and patience 1 would stop at step 2; the fall-back runs every step and says so."""
    frame = split_table.frame.copy()
    rows = frame["split"] == "val"
    if val == "absent":
        frame.loc[rows, "split"] = "train"
    else:
        frame.loc[rows, [label_column(n) for n in labels]] = 0.0
    with caplog.at_level(logging.WARNING, logger=ft_module.__name__):
        ft = run(tiny_encoder, RecordTable(frame, split_table.root), labels, steps=4, eval_every=1, patience=1,
                 lr=0.0, batch_size=16)
    assert ft["selection"].startswith("last step") and ft["val_auc_best"] is None
    assert ft["best_step"] == ft["steps_run"] == ft["steps"] == 4
    assert "no finding has both classes" in caplog.text and np.isfinite(ft["macro_auc"])


def test_finetune_steps_a_warmup_cosine_schedule_over_the_budget(
        tiny_encoder: RadEncoder, split_table: RecordTable, labels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up over 5% of the budget, cosine over all of it, stepped once per optimiser step."""
    made = []

    def recorded(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
        made.append((warmup, total, cosine_with_warmup(optimizer, warmup, total)))
        return made[-1][2]

    monkeypatch.setattr(ft_module, "cosine_with_warmup", recorded)
    ft = run(tiny_encoder, split_table, labels, steps=30, eval_every=5, patience=2, lr=0.0, batch_size=16)
    ((warmup, total, schedule),) = made
    assert (warmup, total) == (2, 30) and schedule.last_epoch == ft["steps_run"]
