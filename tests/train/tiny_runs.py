"""Tiny pre-training configs for engine tests: a config file of configs/ with 32 px images, a 1-block tower and,
for image-text methods, a 1-layer text tower."""

from __future__ import annotations

import shutil
from pathlib import Path

from radlab.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_TEXT = "model.text_tower.kwargs={pooling: mean, layers: 1, hidden_size: 32, heads: 2, max_length: 48}"


def tiny_overrides(data: Path, out: Path, source: str = "phantom") -> list[str]:
    """The overrides of ``tiny_config``: the ``source`` at ``data``, all for training, tiny model, CPU."""
    return [f"out={out}", f"data.sources=[{{source: {source}, path: {data}}}]", "data.split_fractions={train: 1.0}",
            "model.image_size=32", "model.image_tower.kwargs={depth: 1}", "data.vocab_size=300",
            "optim.warmup_steps=2", "optim.log_every=1", "runtime.device=cpu"]


def tiny_config(method: str, data: Path, out: Path, *extra: str) -> TrainConfig:
    """``configs/<method>.yaml`` on the phantoms at ``data``, all for training, on the CPU unless ``extra``
    says otherwise (later overrides win)."""
    overrides = [*tiny_overrides(data, out), *extra]
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


def tiny_manifest(root: Path, n: int = 8, reports: bool = True, labels: bool = True) -> Path:
    """``n`` 32 px images, one patient each, in ``root/manifest.csv`` (no split column: the configs put all in
    train); with ``reports``, findings and impression text without a report column, with ``labels`` one label."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rows = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        row = {"image_path": f"img/{i}.png", "patient_id": f"P{i:03d}"}
        if reports:
            row |= {"findings": "The heart is enlarged." if i % 2 else "Clear lungs.", "impression": "Stable."}
        if labels:
            row["label_cardiomegaly"] = i % 2
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def manifest_config(method: str, root: Path, out: Path, *extra: str) -> TrainConfig:
    """``tiny_config`` on the manifest at ``root`` (``tiny_manifest``), batches of 4."""
    return tiny_config(method, root, out, f"data.sources=[{{source: manifest, path: {root}}}]", "optim.batch_size=4",
                       *extra)
