"""The bundled real data (IU X-ray reports with MeSH labels, no images) through the text and label side of the
issue-5 objectives: targets from real labels, prompts, and training on real reports. Image pre-training on
bundled real images waits for the images; ``radlab pretrain`` says so clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from radlab.cli import app
from radlab.data.dataset import Collator, with_tokens
from radlab.data.loading import load_tables
from radlab.data.records import RecordTable
from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.tokenizer import train_wordpiece
from radlab.objectives.clip import positives, reports_or_prompts
from radlab.objectives.medclip import semantic_targets
from radlab.objectives.unicl import unicl_targets
from radlab.train.config import TrainConfig
from radlab.train.setup import build_objective, training_labels

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SOURCE = ("iu_xray", "iu_xray_reports")




@pytest.fixture(scope="module")
def iu_train(data_root: Path) -> RecordTable:
    if not (data_root / SOURCE[1]).is_dir():
        pytest.skip("iu_xray_reports is not in the bundled data folder")
    return load_tables([SOURCE], {"train": 0.7, "val": 0.1, "test": 0.2}, 0, str(data_root)).split("train")


def _batch(table: RecordTable, names: list[str], rows: np.ndarray, tokenize=None) -> dict:
    labels = table.labels(names)
    texts = table.texts()
    g = torch.Generator().manual_seed(0)
    samples = [{"index": int(i), "image": torch.randn(1, 32, 32, generator=g), "labels": torch.from_numpy(labels[i]),
                "text": texts[i]} for i in rows]  # fixed noise stands in for the missing images
    batch = Collator()(samples)
    return batch if tokenize is None else with_tokens(batch, tokenize)


def test_targets_from_real_labels(iu_train: RecordTable) -> None:
    names = training_labels(iu_train, None)
    batch = _batch(iu_train, names, np.arange(64))
    y = positives(batch["labels"])
    t = unicl_targets(y, y)
    shared = (y @ y.T) > 0
    assert torch.equal(t, (shared | torch.eye(64, dtype=torch.bool)).float())
    assert t.sum() > 64  # real reports share findings: off-diagonal positives exist
    s = semantic_targets(y, y, batch["study"], batch["study"])
    assert torch.all(s.diagonal() == 1) and s.min() >= 0 and s.max() <= 1 + 1e-6
    assert torch.allclose(s, s.T)


def test_label_only_records_get_prompts_from_real_labels(iu_train: RecordTable) -> None:
    names = training_labels(iu_train, None)
    batch = _batch(iu_train, names, np.arange(8))
    batch["text"] = ["" if i % 2 else t for i, t in enumerate(batch["text"])]
    batch["has_text"] = torch.tensor([bool(t) for t in batch["text"]])
    texts = reports_or_prompts(batch, names)
    assert texts[0::2] == batch["text"][0::2]
    assert all(t and t not in batch["text"] for t in texts[1::2])


@pytest.mark.parametrize("method", ["clip", "convirt", "unicl", "dlilp", "medclip"])
def test_objectives_train_on_real_reports_and_labels(method: str, iu_train: RecordTable, tmp_path: Path) -> None:
    """Real reports and MeSH-derived labels into the text tower and the label/target side; fixed noise images
    (one per record) in place of the missing radiographs. One batch of 16, 25 steps: the loss falls."""
    torch.manual_seed(0)
    names = training_labels(iu_train, None)
    cfg = TrainConfig.from_file(CONFIGS / f"{method}.yaml", [f"out={tmp_path}"])
    model = build_encoder(ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 1}),
                                      text_tower=TowerConfig(name="bert_small", kwargs={
                                          "pooling": "mean", "layers": 1, "hidden_size": 64, "heads": 2,
                                          "max_length": 96}), image_size=32, projection=cfg.model.projection),
                          train_wordpiece(iu_train.texts()[:2000], 1000))
    objective = build_objective(cfg, names, model)
    batch = _batch(iu_train, names, np.arange(16), model.text_tower.tokenize)
    params = [p for m in (model, objective) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(25):
        loss = objective(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    print(f"{method} on IU reports: first 5 steps {np.mean(losses[:5]):.4f}, last 5 {np.mean(losses[-5:]):.4f}")
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_pretrain_on_reports_without_images_fails_clearly(data_root: Path, tmp_path: Path) -> None:
    if not (data_root / SOURCE[1]).is_dir():
        pytest.skip("iu_xray_reports is not in the bundled data folder")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(CONFIGS / "supervised.yaml"), "--data",
                                      str(data_root), f"out={tmp_path}", "optim.steps=1",
                                      "data.sources=[{source: iu_xray, path: iu_xray_reports}]"])
    assert result.exit_code == 1 and "error:" in result.output
    assert "image files" in result.output and "missing" in result.output
