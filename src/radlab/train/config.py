"""The pre-training config: model, objective, data and optimisation, validated by pydantic."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from radlab.config import (
    apply_overrides,
    load_yaml,
    parameter_names,
    refuse_unknown_kwargs,
    registered,
    validated,
)
from radlab.data.splits import DEFAULT_FRACTIONS, checked_fractions
from radlab.data.taxonomy import FINDING_NAMES
from radlab.models.build import ModelConfig
from radlab.objectives import OBJECTIVES


class ObjectiveConfig(BaseModel):
    """A registered objective and the keyword arguments of its class (checked against its signature)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kwargs: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_kwargs(self) -> ObjectiveConfig:
        cls = registered(OBJECTIVES, self.name, "objective.name")
        refuse_unknown_kwargs(self.kwargs, parameter_names(cls), "objective.kwargs", f"objective {self.name!r}")
        return self


class DataSource(BaseModel):
    """A registered source and its folder; a relative folder is looked up under the data root too."""

    model_config = ConfigDict(extra="forbid")
    source: str
    path: str


class SubsetConfig(BaseModel):
    """Pre-train on a seeded, patient-level ``fraction`` of the training split (low-data regimes); with one
    seed, smaller fractions are subsets of larger ones (``data.splits.patient_subset``)."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(gt=0, le=1)
    seed: int = 0


class DataConfig(BaseModel):
    """``eval_sources``: evaluation sets whose patients must not be pre-trained on (checked at start-up;
    ``allow_eval_overlap`` forces the run with a logged warning). ``unreadable_images``: ``error`` stops at an
    image file that cannot be read, naming it; ``skip`` stands the next readable record in, logs the file and
    counts the replacements (``replaced_images`` in the metrics). ``image_cache``: a folder for the run's images
    pre-resized to the model's size as uint8 (``radlab.data.cache``), built by rank 0 before training, reused
    while it matches the records and rebuilt when stale; every epoch then reads memory-mapped rows instead of
    decoding full-size files (pixels rounded to 1/255). It needs the tower's padded-square geometry.
    ``source_size``: the side at which training images are read before their random views are cut at the
    tower's size (the tower's geometry scaled; the cache then holds that side). Unset, views are cut from the
    image at the tower's size, so a zoomed crop (DINOv2's local views) is upsampled; DINOv2 and RAD-DINO cut
    crops from the source image, which e.g. 2x the tower's size approaches."""

    model_config = ConfigDict(extra="forbid")
    sources: list[DataSource]
    eval_sources: list[DataSource] = []
    allow_eval_overlap: bool = False
    unreadable_images: Literal["error", "skip"] = "error"
    image_cache: str | None = None
    source_size: int | None = Field(default=None, gt=0)
    labels: list[str] | None = None
    split_seed: int = 0
    split_fractions: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    train_subset: SubsetConfig | None = None
    vocab_size: int = 4000

    @field_validator("sources")
    @classmethod
    def _some_source(cls, sources: list[DataSource]) -> list[DataSource]:
        if not sources:
            raise ValueError("data.sources is empty: list at least one {source: NAME, path: FOLDER}")
        return sources

    @field_validator("labels")
    @classmethod
    def _canonical_labels(cls, labels: list[str] | None) -> list[str] | None:
        unknown = [_with_suggestion(name) for name in labels or [] if name not in FINDING_NAMES]
        if unknown:
            raise ValueError(f"data.labels: not canonical findings (radlab.data.taxonomy): {', '.join(unknown)}; "
                             f"valid: {', '.join(FINDING_NAMES)}")
        return labels

    @field_validator("split_fractions")
    @classmethod
    def _known_splits(cls, fractions: dict[str, float]) -> dict[str, float]:
        checked_fractions(fractions)
        return fractions

    @model_validator(mode="after")
    def _cache_reads_every_image(self) -> DataConfig:
        if self.image_cache is not None and self.unreadable_images == "skip":
            raise ValueError("data.image_cache reads every image before training, so it cannot skip unreadable "
                             "ones: list and drop them with `radlab data check TABLE --drop OUT` and train on OUT")
        return self


def _with_suggestion(name: str) -> str:
    """``name`` quoted, with the closest canonical finding when one is close."""
    close = difflib.get_close_matches(name, FINDING_NAMES, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


class OptimConfig(BaseModel):
    """``batch_size`` is the global batch of one optimiser step: each of W ranks takes
    batch_size / (W * accumulation) samples per micro-batch, so W and accumulation leave the run unchanged
    (contrastive negatives, though, come from one micro-batch gathered over ranks, and DINOv2's centre,
    Sinkhorn-Knopp and KoLeo work per micro-batch: docs/training.md)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, gt=0)
    batch_size: int = Field(32, gt=0)
    accumulation: int = Field(1, gt=0)
    lr: float = 3e-4
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # cosine from weight_decay to this (DINOv2: 0.04 -> 0.2)
    layer_decay: float | None = None
    patch_embed_lr_scale: float = 1.0  # DINOv2: 0.2
    warmup_steps: int = 20
    grad_clip: float | None = 1.0
    num_workers: int = 0
    log_every: int = 10


class EmaConfig(BaseModel):
    """EMA of the model and objective weights; the final checkpoint holds the averaged weights."""

    model_config = ConfigDict(extra="forbid")
    decay: float = 0.999
    warmup: int = 0


class CheckpointConfig(BaseModel):
    """Training states for ``--resume`` every ``every`` steps and at the end (0: only when a run stops early, by time budget or early stopping)."""

    model_config = ConfigDict(extra="forbid")
    every: int = 0
    keep_last: int = 2


class EarlyStoppingConfig(BaseModel):
    """Every ``every`` steps, average the objective's term ``metric`` over the validation split; stop after
    ``patience`` evaluations without an improvement of at least ``min_delta``. With ``restore_best`` the
    exported encoder is the one of the best validation step (else the last step's)."""

    model_config = ConfigDict(extra="forbid")
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    every: int = 50
    patience: int = 3
    min_delta: float = 0.0
    max_batches: int | None = None
    restore_best: bool = True


class RuntimeConfig(BaseModel):
    """Device ("auto": CUDA when available), bf16 autocast (GPU only), the multi-rank strategy ("ddp"
    replicates the model; "fsdp" shards it, for large towers), and DDP's unused-parameter search (needed
    only when an objective leaves trainable parameters out of some steps' graphs)."""

    model_config = ConfigDict(extra="forbid")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    strategy: Literal["ddp", "fsdp"] = "ddp"
    find_unused_parameters: bool = False


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "run"
    seed: int = 0
    out: str = "runs/pretrain"
    objective: ObjectiveConfig
    model: ModelConfig = ModelConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    ema: EmaConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    early_stopping: EarlyStoppingConfig | None = None
    max_minutes: float | None = None
    resume: bool = False
    init_from: str | None = None  # a radlab checkpoint folder to start from (train/initial_weights.py)

    @classmethod
    def from_file(cls, path: Path | str, overrides: list[str] | None = None) -> TrainConfig:
        """The config at ``path`` with ``key=value`` overrides; a refused setting is a ValueError naming the file
        and each bad key (``radlab.config.config_errors``)."""
        return validated(cls, apply_overrides(load_yaml(path), overrides or []), path, overrides or [])
