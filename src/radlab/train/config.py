"""The pre-training config: model, objective, data and optimisation, validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from radlab.config import apply_overrides, load_yaml
from radlab.models.build import ModelConfig


class ObjectiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kwargs: dict[str, Any] = {}


class DataSource(BaseModel):
    """A registered source and its folder; a relative folder is looked up under the data root too."""

    model_config = ConfigDict(extra="forbid")
    source: str
    path: str


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[DataSource]
    labels: list[str] | None = None
    split_seed: int = 0
    split_fractions: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
    vocab_size: int = 4000


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 20
    grad_clip: float = 1.0
    num_workers: int = 0
    log_every: int = 10


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "run"
    seed: int = 0
    out: str = "runs/pretrain"
    objective: ObjectiveConfig
    model: ModelConfig = ModelConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()

    @classmethod
    def from_file(cls, path: Path | str, overrides: list[str] | None = None) -> TrainConfig:
        return cls.model_validate(apply_overrides(load_yaml(path), overrides or []))
