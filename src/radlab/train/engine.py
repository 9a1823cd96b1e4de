"""The pre-training loop: build data, model and objective from a config, train, write a checkpoint."""

from __future__ import annotations

import inspect
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from radlab.data.dataset import Collator, RecordDataset, train_augment
from radlab.data.loading import load_tables
from radlab.data.records import RecordTable
from radlab.models.build import build_encoder
from radlab.models.checkpoint import save_encoder
from radlab.models.tokenizer import train_wordpiece
from radlab.objectives import OBJECTIVES, Objective
from radlab.train.config import TrainConfig
from radlab.train.optim import cosine_with_warmup, param_groups

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def training_labels(table: RecordTable, requested: list[str] | None) -> list[str]:
    """The requested labels, else every label the training data annotates for at least one record."""
    if requested:
        return requested
    annotated = ~np.isnan(table.labels())
    return [name for name, seen in zip(table.label_names, annotated.any(0), strict=True) if seen]


def build_objective(cfg: TrainConfig, class_names: list[str]) -> Objective:
    """Objectives take what they need from the context by argument name (class_names, embed_dim)."""
    cls = OBJECTIVES.get(cfg.objective.name)
    context = {"class_names": class_names, "embed_dim": cfg.model.embed_dim}
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in context.items() if k in accepted}, **cfg.objective.kwargs)


def pretrain(cfg: TrainConfig, data_root: str | None = None, progress: bool = True) -> Path:
    """Train and write ``<out>/checkpoint`` plus ``<out>/metrics.jsonl``; returns the checkpoint folder."""
    generator = seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = load_tables([(s.source, s.path) for s in cfg.data.sources], cfg.data.split_fractions,
                        cfg.data.split_seed, data_root)
    train_table = table.split("train")
    train_table = train_table.subset(train_table.has_images())
    class_names = training_labels(train_table, cfg.data.labels)
    objective_cls = OBJECTIVES.get(cfg.objective.name)
    tokenizer = None
    if cfg.model.text_tower is not None and cfg.model.text_tower.name != "hf":
        tokenizer = train_wordpiece(table.split("train").texts(), cfg.data.vocab_size)
    model = build_encoder(cfg.model if objective_cls.requires_text else cfg.model.model_copy(update={"text_tower": None}),
                          tokenizer)
    objective = build_objective(cfg, class_names)
    transform = objective.train_transform(cfg.model.image_size) or train_augment(cfg.model.image_size)
    dataset = RecordDataset(train_table, model.preprocess, class_names, transform)
    tokenize = model.text_tower.tokenize if objective.requires_text else None
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.optim.num_workers, collate_fn=Collator(tokenize), generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images is fewer than one batch of {cfg.optim.batch_size}")
    optimizer = torch.optim.AdamW(param_groups([model, objective], cfg.optim.weight_decay), lr=cfg.optim.lr)
    scheduler = cosine_with_warmup(optimizer, cfg.optim.warmup_steps, cfg.optim.steps)
    log.info("pretraining %s on %d images, %d labels, %d steps", cfg.objective.name, len(dataset),
             len(class_names), cfg.optim.steps)
    model.train()
    objective.train()
    metrics_path = out / "metrics.jsonl"
    step, start = 0, time.time()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn()]
    with metrics_path.open("w") as metrics, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(cfg.name, total=cfg.optim.steps, loss=float("nan"))
        while step < cfg.optim.steps:
            for batch in loader:
                terms = objective(model, batch)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               cfg.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                objective.after_step(model, step, cfg.optim.steps)
                record = {"step": step, "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - start, 2),
                          **{k: float(v.detach()) for k, v in terms.items()}}
                if step % cfg.optim.log_every == 0 or step == cfg.optim.steps:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                bar.update(task, advance=1, loss=record["loss"])
                if step >= cfg.optim.steps:
                    break
    objective.attach(model)
    tower = {"name": cfg.model.image_tower.name, "kwargs": cfg.model.image_tower.kwargs}
    return save_encoder(model.eval(), out / "checkpoint", tower, {"train_config": cfg.model_dump()})
