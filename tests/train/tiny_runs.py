"""Tiny pre-training configs for engine tests: a config file of configs/ with 32 px images, a 1-block tower and,
for image-text methods, a 1-layer text tower."""

from __future__ import annotations

import shutil
from pathlib import Path

from radlab.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_TEXT = "model.text_tower.kwargs={pooling: mean, layers: 1, hidden_size: 32, heads: 2, max_length: 48}"


def tiny_config(method: str, data: Path, out: Path, *extra: str) -> TrainConfig:
    """``configs/<method>.yaml`` on the phantoms at ``data``, all for training, on the CPU unless ``extra``
    says otherwise (later overrides win)."""
    overrides = [f"out={out}", f"data.sources=[{{source: phantom, path: {data}}}]", "data.split_fractions={train: 1.0}",
                 "model.image_size=32", "model.image_tower.kwargs={depth: 1}", "data.vocab_size=300",
                 "optim.warmup_steps=2", "optim.log_every=1", "runtime.device=cpu", *extra]
    cfg = TrainConfig.from_file(CONFIGS / f"{method}.yaml", overrides)
    if cfg.model.text_tower is None:
        return cfg
    return TrainConfig.from_file(CONFIGS / f"{method}.yaml", [*overrides, TINY_TEXT])


def interrupted_copy(run: Path, out: Path, step: int) -> Path:
    """What a run interrupted after ``step`` leaves in ``out``: that step's training state and the tokenizer."""
    state = run / "state" / f"step_{step:08d}.pt"
    (out / "state").mkdir(parents=True)
    shutil.copy(state, out / "state" / state.name)
    if (run / "tokenizer").is_dir():
        shutil.copytree(run / "tokenizer", out / "tokenizer")
    return out
