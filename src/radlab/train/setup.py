"""What a run trains, from its config: the tables (patient-level splits, the pre-training subset, the refusal
of evaluation patients), the labels, the encoder (built, or a public one continued) with its tokenizer, and
the objective. The engine (``radlab.train.engine``) runs the loop on them."""

from __future__ import annotations

import inspect
import logging
import random
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from radlab.data.audit import refuse_overlap, tables_share_images
from radlab.data.cache import ImageCache, ensure_cache
from radlab.data.dataset import cache_size
from radlab.data.loading import load_tables
from radlab.data.records import RecordTable
from radlab.data.splits import patient_subset
from radlab.models.build import build_encoder, external_encoder, freeze_unreached
from radlab.models.encoder import RadEncoder
from radlab.models.text_towers import builds_own_tokenizer
from radlab.models.tokenizer import train_wordpiece
from radlab.models.towers import Preprocess
from radlab.objectives import OBJECTIVES, Objective
from radlab.train import distributed as distrib
from radlab.train.config import TrainConfig
from radlab.train.initial_weights import checkpoint_tokenizer_dir

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def training_labels(table: RecordTable, requested: list[str] | None) -> list[str]:
    """The requested labels, else every label the training data annotates for at least one record; a
    requested label that no training record annotates is refused."""
    names = requested or table.label_names
    seen = (~np.isnan(table.labels(names))).any(0)
    never = [name for name, annotated in zip(names, seen, strict=True) if not annotated]
    if requested and never:
        raise ValueError(f"data.labels: no pre-training record annotates {', '.join(never)}; request only "
                         "labels the training sources annotate")
    return [name for name, annotated in zip(names, seen, strict=True) if annotated]


def run_tables(cfg: TrainConfig, data_root: str | None) -> tuple[RecordTable, RecordTable]:
    """``pretraining_tables``, refusing patients of a declared evaluation set (``refuse_evaluation_patients``)."""
    table, train = pretraining_tables(cfg, data_root)
    refuse_evaluation_patients(cfg, train, data_root)
    return table, train


def pretraining_tables(cfg: TrainConfig, data_root: str | None) -> tuple[RecordTable, RecordTable]:
    """(every record with its split, the records pre-training may use: the train split or its patient subset)."""
    data = cfg.data
    table = load_tables([(s.source, s.path) for s in data.sources], data.split_fractions, data.split_seed, data_root)
    train = table.split("train")
    if data.train_subset is not None:
        chosen = patient_subset(train, data.train_subset.fraction, data.train_subset.seed)
        log.info("pre-training on %d of %d training patients (%d of %d images; fraction %g, seed %d)",
                 chosen.frame["patient_id"].nunique(), train.frame["patient_id"].nunique(), len(chosen), len(train),
                 data.train_subset.fraction, data.train_subset.seed)
        train = chosen
    return table, train


def refuse_evaluation_patients(cfg: TrainConfig, train_table: RecordTable, data_root: str | None) -> None:
    """Pre-training on patients of a declared evaluation set is refused unless forced; where a training
    and an evaluation source re-encode the same images under unrelated ids (NIH and RSNA/SIIM), their
    images are audited too."""
    data = cfg.data
    if data.eval_sources:
        evals = {f"{s.source}:{s.path}": load_tables([(s.source, s.path)], data.split_fractions,
                                                     data.split_seed, data_root) for s in data.eval_sources}
        images = any(tables_share_images(train_table, e) for e in evals.values())
        refuse_overlap(train_table, evals, force=data.allow_eval_overlap, images=images)


def build_model(cfg: TrainConfig, env: distrib.DistEnv, train_table: RecordTable, with_text: bool) -> RadEncoder:
    """The encoder to train: a public one to continue (``model.external``), or towers built from the
    config, whose text tower (when the objective reads text and it builds no tokenizer of its own) gets
    the run's WordPiece tokenizer (``run_tokenizer``)."""
    model_cfg = cfg.model
    if model_cfg.external:
        if cfg.init_from:
            raise ValueError("model.external and init_from both choose the starting weights: set one "
                             "(model.external also takes a radlab checkpoint folder)")
        model = external_encoder(model_cfg.external, with_text)
        torch.manual_seed(cfg.seed)  # identical objective heads on every rank
    else:
        model_cfg = model_cfg if with_text else model_cfg.model_copy(update={"text_tower": None})
        tokenizer = None
        if model_cfg.text_tower is not None and not builds_own_tokenizer(model_cfg.text_tower.name):
            tokenizer = run_tokenizer(cfg, env, train_table)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = build_encoder(model_cfg, tokenizer)
    freeze_unreached(model)  # DDP refuses parameters no gradient reaches (public poolers, classifiers); no RNG
    return model


def run_tokenizer(cfg: TrainConfig, env: distrib.DistEnv, table: RecordTable) -> PreTrainedTokenizerBase:
    """WordPiece built once (rank 0), or the ``init_from`` checkpoint's, saved to ``<out>/tokenizer``; every
    rank and every resumed session loads that copy, so the vocabulary cannot drift if the training reports
    change between sessions."""
    folder = Path(cfg.out) / "tokenizer"
    if env.is_main and not (cfg.resume and folder.is_dir()):  # rank 0 decides; every rank waits below
        start = checkpoint_tokenizer_dir(cfg.init_from) if cfg.init_from else None
        tokenizer = AutoTokenizer.from_pretrained(start) if start else \
            train_wordpiece(table.texts(), cfg.data.vocab_size)
        tokenizer.save_pretrained(folder)
    distrib.wait_for_main()
    return AutoTokenizer.from_pretrained(folder)


def run_image_cache(cfg: TrainConfig, env: distrib.DistEnv, tables: list[RecordTable],
                    preprocess: Preprocess) -> ImageCache | None:
    """``data.image_cache``: the run's image records (``tables``) pre-resized for ``preprocess``, built or reused
    by rank 0 (``ensure_cache``: rebuilt when stale, and then already validated); the other ranks open it after
    the barrier (validated by the datasets that read it)."""
    folder = cfg.data.image_cache
    if folder is None:
        return None
    size = cache_size(preprocess, cfg.data.source_size)
    cache = ensure_cache(RecordTable.concat(tables), folder, size, cfg.optim.num_workers) if env.is_main else None
    distrib.wait_for_main()
    return ImageCache(folder) if cache is None else cache


def build_objective(cfg: TrainConfig, class_names: list[str], model: RadEncoder | None = None) -> Objective:
    """Objectives take what they need from the context by argument name: class_names, embed_dim, and with a
    built ``model`` image_dim / text_dim (its towers' widths), the model itself (EMA teachers copy its image
    tower), seed, and for image-text objectives continuing a public model its temperature
    (``init_temperature`` = 1 / ``pretrained_logit_scale``). The config's ``objective.kwargs`` win."""
    cls = OBJECTIVES.get(cfg.objective.name)
    context = {"class_names": class_names, "embed_dim": model.embed_dim if model is not None else cfg.model.embed_dim,
               "seed": cfg.seed}
    if model is not None:
        context["image_dim"] = model.image_tower.embed_dim
        context["text_dim"] = model.text_tower.embed_dim if model.text_tower is not None else None
        context["model"] = model
        if cls.requires_text and model.pretrained_logit_scale:  # a continued CLIP keeps its temperature
            context["init_temperature"] = 1.0 / model.pretrained_logit_scale
    accepted = inspect.signature(cls).parameters
    given = cfg.objective.kwargs
    return cls(**{k: v for k, v in context.items() if k in accepted and k not in given}, **given)
