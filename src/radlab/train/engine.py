"""The pre-training engine: one readable PyTorch loop from one CPU to many GPUs (DDP via ``torchrun``).

Per optimiser step: ``accumulation`` micro-batches (gradient sync only on the last), bf16 autocast on GPU,
gradient clipping, AdamW step, cosine-with-warm-up schedule, the objective's ``after_step`` hook, and an
optional EMA. Metrics go to ``<out>/metrics.jsonl`` and TensorBoard (``<out>/tb``); training states to
``<out>/state`` (see ``radlab.train.state``) so ``resume=true`` continues exactly where a run stopped; the
encoder to ``<out>/checkpoint``. A ``max_minutes`` budget and early stopping on a validation term end runs
early, both with a resumable state written; ``encoder.json`` records the step reached and why the run stopped
(``stop_note``). A run whose objective has nothing to learn from in the train split is refused at start-up
(``refuse_nothing_to_learn``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from radlab.data.cache import ImageCache
from radlab.data.dataset import (
    Collator,
    RecordDataset,
    ReportDataset,
    study_reports,
    train_augment,
    with_tokens,
)
from radlab.data.records import RecordTable
from radlab.models.checkpoint import OBJECTIVE_FILE, read_spec, save_encoder, strip_prefix
from radlab.models.encoder import ClampedScale, RadEncoder
from radlab.objectives import OBJECTIVES, Objective
from radlab.progress import StepProgress
from radlab.train import distributed as distrib
from radlab.train import sharding
from radlab.train.config import TrainConfig
from radlab.train.early_stopping import EarlyStopper
from radlab.train.ema import ModelEMA
from radlab.train.initial_weights import load_encoder_weights, load_objective_state
from radlab.train.loader import Position, RankedBatchSampler, SeededDataset, stream
from radlab.train.optim import cosine_weight_decay, cosine_with_warmup, param_groups
from radlab.train.run_log import RunLog
from radlab.train.setup import (
    build_model,
    build_objective,
    run_image_cache,
    run_tables,
    seed_everything,
    training_labels,
)
from radlab.train.state import (
    changed_fields,
    clear_states,
    field_defaults,
    latest_state,
    load_state,
    rng_state,
    run_fingerprint,
    save_state,
    set_rng_state,
)

log = logging.getLogger(__name__)

def refuse_nothing_to_learn(cfg: TrainConfig, train_table: RecordTable, class_names: list[str]) -> None:
    """Raise ValueError when the objective has nothing to learn from in ``train_table``: a label objective
    (``requires_labels``) without an annotated label, or an image-text one (``requires_text``) without report
    text on the records it trains on, unless a term of it trains without (``Objective.trains_without_reports``:
    logged)."""
    name = cfg.objective.name
    cls = OBJECTIVES.get(name)
    if cls.requires_labels and not class_names:
        raise ValueError(f"objective {name} learns from labels, but no record of the train split annotates one (0 "
                         "labels): add label_<finding> columns to the manifest or a labelled source, label the "
                         "reports with `radlab data import ... --report-labels`, or choose an objective without "
                         "labels (e.g. clip, dinov2)")
    if not cls.requires_text:
        return
    records = train_table.subset(train_table.has_images()) if cls.requires_images else train_table
    if any(text.strip() for text in records.texts()):
        return
    defaults = inspect.signature(cls).parameters
    kwargs = cfg.objective.kwargs
    term = cls.trains_without_reports(lambda key: kwargs.get(key, defaults[key].default))
    if term is not None:
        log.warning("objective %s: no record of the train split has report text; it trains on %s alone", name, term)
        return
    kind = "records with images" if cls.requires_images else "records"
    raise ValueError(f"objective {name} learns from report text, but none of the train split's {len(records)} "
                     f"{kind} has any: give the records a report, findings or impression column (a manifest "
                     "imported before findings and impression made its reports: import it again), or choose "
                     "an objective without text (e.g. supervised, dinov2)")


def stop_note(checkpoint: Path) -> str:
    """How the run that wrote ``checkpoint`` ended, for the console: the step reached of ``optim.steps`` and, for
    a run that stopped early, why and how it goes on; the exported step where it is another (early stopping's
    best). '' for a checkpoint that does not record it."""
    spec = read_spec(checkpoint)
    stop = spec.get("stop")
    if not stop:
        return ""
    reached, total, reason = stop["step"], stop["steps"], stop["reason"]
    note = f"step {reached} of {total}"
    if reached < total and reason == "max_minutes":
        note += ": stopped by max_minutes; the same command with --resume continues"
    elif reached < total and reason == "early_stopping":
        note += ": stopped by early stopping"
    if spec.get("step", reached) != reached:
        note += f"; exported step {spec['step']}, the best on validation"
    return f" ({note})"


class TrainModule(nn.Module):
    """Model and objective as one module, so DDP syncs the gradients of both; the objective receives the
    plain ``RadEncoder`` and may call any of its methods."""

    def __init__(self, model: RadEncoder, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.objective(self.model, batch)


def to_device(batch: object, device: torch.device) -> object:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor):
        return [to_device(v, device) for v in batch]
    return batch


class Trainer:
    """Holds what one run needs; ``fit`` runs the loop. Built by ``pretrain``."""

    def __init__(self, cfg: TrainConfig, env: distrib.DistEnv, data_root: str | None) -> None:
        self.cfg, self.env = cfg, env
        self.out = Path(cfg.out)
        self.fingerprint = run_fingerprint(cfg)  # what a state records of its run, and a resume must match
        seed_everything(cfg.seed + env.rank)
        table, train_table = run_tables(cfg, data_root)
        self.trained_on = train_table.digest()  # recorded in the checkpoint for leakage checks
        self.class_names = training_labels(train_table, cfg.data.labels)
        refuse_nothing_to_learn(cfg, train_table, self.class_names)
        objective_cls = OBJECTIVES.get(cfg.objective.name)
        self.model = build_model(cfg, env, train_table, objective_cls.requires_text)
        if cfg.init_from:  # before the objective: EMA teachers copy the loaded tower
            load_encoder_weights(self.model, cfg.init_from)
        self.objective = build_objective(cfg, self.class_names, self.model)
        self.model.local_match = None  # a public GLoRIA's: GLoRIA's objective started from it, others drop it
        if cfg.init_from:
            load_objective_state(self.objective, cfg.objective.name, cfg.init_from)
        for param in self.objective.unused_parameters(self.model):
            param.requires_grad_(False)
        torch.manual_seed(cfg.seed + env.rank)
        self.module = distrib.sync_batch_norm(TrainModule(self.model, self.objective), env).to(env.device)
        self.scales = [m for m in self.module.modules() if isinstance(m, ClampedScale)]
        self.wrapped: nn.Module = self.module
        self.sharded = env.world_size > 1 and cfg.runtime.strategy == "fsdp"
        if self.sharded:
            if cfg.ema is not None:
                raise ValueError("ema is not supported with runtime.strategy=fsdp")
            sharding.shard(self.module, env.device)
        elif env.world_size > 1:
            self.wrapped = DistributedDataParallel(
                self.module, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                find_unused_parameters=cfg.runtime.find_unused_parameters)
        self.micro_batch = self._micro_batch()
        size = self.model.preprocess.image_size
        views = self.objective.train_transform(size)  # a multi-view objective's own views, else None
        transform = views or train_augment(size)
        self.tokenize = self.model.text_tower.tokenize if self.objective.requires_text else None
        records = [self._records(train_table, "train")]
        if cfg.early_stopping is not None:
            records.append(self._records(table.split("val"), "val"))
        cache = run_image_cache(cfg, env, records, self.model.preprocess) if self.objective.requires_images else None
        self.loader, self.sampler = self._loader(records[0], transform, shuffle=True, cache=cache)
        # validation: an objective's own views where it needs them (seeded per sample, epoch 0), else the images
        # as evaluation reads them, without the training augmentation
        self.val = self._loader(records[1], views, shuffle=False, cache=cache) if len(records) > 1 else None
        opt = cfg.optim
        groups = param_groups(self.module, opt.weight_decay, opt.lr, opt.layer_decay, opt.patch_embed_lr_scale)
        self.optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        self.scheduler = cosine_with_warmup(self.optimizer, opt.warmup_steps, opt.steps, opt.min_lr_ratio)
        self.ema = ModelEMA(self.module, cfg.ema.decay, cfg.ema.warmup) if cfg.ema is not None else None
        self.stopper = EarlyStopper(cfg.early_stopping) if cfg.early_stopping is not None else None
        self.step = 0
        self.replaced = 0  # samples of this rank that stood in for an unreadable image (data.unreadable_images)
        self.schedule: dict[str, float] = {}  # the last step's learning rate (and weight decay), for the log
        self.elapsed_before = 0.0
        self.started = time.time()

    def _micro_batch(self) -> int:
        opt, world = self.cfg.optim, self.env.world_size
        if opt.batch_size % (world * opt.accumulation):
            raise ValueError(f"batch_size {opt.batch_size} must be divisible by world size {world} x "
                             f"accumulation {opt.accumulation}")
        return opt.batch_size // (world * opt.accumulation)

    def _records(self, table: RecordTable, split: str) -> RecordTable:
        """The records a split trains on: those with images on disk, or for text-only objectives one per study
        with a report; at least one global batch of them."""
        if not self.objective.requires_images:
            chosen, kind = study_reports(table), "studies with a report"
        else:
            chosen, kind = table.subset(table.has_images()), "records with images"
            probe = np.unique(np.linspace(0, len(chosen) - 1, min(256, len(chosen))).astype(int))
            missing = [i for i in probe if not chosen.image_path(int(i)).exists()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of {len(probe)} probed image files of the {split} split are missing (e.g. "
                    f"{chosen.image_path(int(missing[0]))}); image objectives need the images on disk")
        needed = self.cfg.optim.batch_size if split == "train" else self.micro_batch * self.env.world_size
        if len(chosen) < needed:
            raise ValueError(f"the {split} split has {len(chosen)} {kind} (of {len(table)} records), fewer than "
                             f"one batch of {needed}")
        return chosen

    def _loader(self, table: RecordTable, transform: object, shuffle: bool,
                cache: ImageCache | None = None) -> tuple[DataLoader, RankedBatchSampler]:
        skip = self.cfg.data.unreadable_images == "skip"
        records = (RecordDataset(table, self.model.preprocess, self.class_names, transform, cache, skip,
                                 self.cfg.data.source_size)
                   if self.objective.requires_images else ReportDataset(table))
        dataset = SeededDataset(records, self.cfg.seed)
        sampler = RankedBatchSampler(len(dataset), self.micro_batch, self.cfg.seed, self.env.rank,
                                     self.env.world_size, shuffle, self.cfg.optim.accumulation if shuffle else 1)
        # The loader's own generator: creating an iterator (each epoch) must not draw from the global RNG,
        # whose state training states restore; augmentation is seeded per sample by SeededDataset.
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=self.cfg.optim.num_workers,
                            collate_fn=Collator(), pin_memory=self.env.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.cfg.seed))
        return loader, sampler

    def _on_device(self, batch: dict) -> dict:
        """A loader batch, tokenised here when the objective reads text (``with_tokens``), on the run's device."""
        return to_device(batch if self.tokenize is None else with_tokens(batch, self.tokenize), self.env.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        enabled = self.cfg.runtime.amp and self.env.device.type == "cuda"
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=enabled)

    # --- training states -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        rngs = [None] * self.env.world_size
        if self.env.world_size > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        pos = self.sampler.position
        model, objective, optimizer = self._model_states()
        return {"step": self.step, "elapsed": self.elapsed(), "epoch": pos.epoch, "samples": pos.samples,
                "replaced": distrib.global_count(self.replaced, self.env.device), "config": self.fingerprint,
                "model": model, "objective": objective,
                "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "early_stopping": self.stopper.state_dict() if self.stopper else None, "rng": rngs}

    def _model_states(self) -> tuple[dict, dict, dict]:
        """Model, objective and optimiser states; gathered in full when sharded (a collective)."""
        weights = self._weights()
        optimizer = sharding.full_optimizer_state(self.module, self.optimizer) if self.sharded else \
            self.optimizer.state_dict()
        return weights["model"], weights["objective"], optimizer

    def _weights(self, every_rank: bool = False) -> dict:
        """Model and objective states and the EMA's; when sharded, gathered in full (a collective) on rank 0,
        or with ``every_rank`` on every rank."""
        if self.sharded:
            full = sharding.full_model_state(self.module, every_rank)
            weights = {p: strip_prefix(full, p + ".") for p in ("model", "objective")}
        else:
            weights = {"model": self.model.state_dict(), "objective": self.objective.state_dict()}
        return {**weights, "ema": self.ema.state_dict() if self.ema else None}

    def _load_weights(self, weights: dict) -> None:
        if self.sharded:
            sharding.load_full_model_state(
                self.module, {f"{p}.{k}": v for p in ("model", "objective") for k, v in weights[p].items()})
        else:
            self.model.load_state_dict(weights["model"])
            self.objective.load_state_dict(weights["objective"])
        if self.ema is not None and weights["ema"] is not None:
            self.ema.load_state_dict(weights["ema"])

    def load_state_dict(self, state: dict) -> None:
        self._load_weights(state)
        if self.sharded:
            sharding.load_full_optimizer_state(self.module, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.stopper is not None and state["early_stopping"] is not None:
            self.stopper.load_state_dict(state["early_stopping"])
        self.step, self.elapsed_before = int(state["step"]), float(state["elapsed"])
        self.replaced = int(state.get("replaced", 0)) if self.env.is_main else 0  # every rank's, summed
        self.sampler.position = Position(int(state["epoch"]), int(state["samples"]))
        rngs = state["rng"]
        if len(rngs) != self.env.world_size:
            log.warning("resuming %d ranks from a state of %d: RNG streams differ from the original run",
                        self.env.world_size, len(rngs))
        set_rng_state(rngs[self.env.rank % len(rngs)])

    def elapsed(self) -> float:
        """Training seconds over all sessions of this run."""
        return self.elapsed_before + time.time() - self.started

    def checkpoint(self) -> None:
        state = self.state_dict()
        if self.env.is_main:
            save_state(self.out, self.step, state, self.cfg.checkpoint.keep_last)
        distrib.barrier()

    def resume(self) -> None:
        """Every rank loads the state rank 0 finds (``out`` must be on a filesystem all ranks see)."""
        path = distrib.from_main(latest_state(self.out) if self.env.is_main else None)
        if path is None:
            log.warning("resume requested but %s has no saved state; starting from scratch", self.out / "state")
            return
        if not path.is_file():
            raise FileNotFoundError(f"rank {self.env.rank} cannot see {path}, the state rank 0 resumes from: the "
                                    f"run's out folder must be on a filesystem every rank sees")
        state = load_state(path, self.env.device)
        changed = changed_fields(state.get("config"), self.fingerprint, defaults=field_defaults(type(self.cfg)))
        if changed:
            moved = "; a moved starting checkpoint resumes at its new path, another one does not" \
                if any(c.startswith("starting_files.") for c in changed) else ""
            raise ValueError(f"cannot resume {path}: the config differs from that run's in {changed}{moved}; resume "
                             "needs the same run (a new run can start from its checkpoint with init_from=...)")
        self.load_state_dict(state)
        log.info("resumed from %s at step %d", path, self.step)

    # --- the loop --------------------------------------------------------------------------------------

    def train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        """One optimiser step over ``accumulation`` micro-batches; returns the terms averaged over them."""
        accumulation = self.cfg.optim.accumulation
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accumulation):
            batch = next(batches)
            self.replaced += int(batch.get("replaced", 0))  # before the device: no GPU sync for it
            batch = self._on_device(batch)
            last = micro == accumulation - 1
            if self.sharded:
                self.module.set_requires_gradient_sync(last)
            sync = contextlib.nullcontext() if last or self.wrapped is self.module else self.wrapped.no_sync()
            with sync:
                with self.autocast():
                    terms = self.wrapped(batch)
                (terms["loss"] / accumulation).backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / accumulation
        if self.cfg.optim.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip).detach()
            sums["grad_norm"] = norm.full_tensor() if self.sharded else norm  # a DTensor when sharded
        # this step's values, the same on every rank; lr as scheduled, before any group's layer-decay scale
        self.schedule = {"lr": self.scheduler.get_last_lr()[0] / self.optimizer.param_groups[0]["lr_scale"]}
        if self.cfg.optim.weight_decay_end is not None:
            self.schedule["weight_decay"] = cosine_weight_decay(
                self.optimizer, self.step, self.cfg.optim.steps, self.cfg.optim.weight_decay,
                self.cfg.optim.weight_decay_end)
        self.objective.before_optimizer_step()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        for scale in self.scales:
            scale.clamp_scale_()
        self.objective.after_step(self.model, self.step, self.cfg.optim.steps)
        if self.ema is not None:
            self.ema.update(self.module)
        return sums

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean of each objective term over the validation split (all ranks), in eval mode; the random
        generators are left as validation found them, so validating changes nothing of the training run."""
        saved = rng_state()
        try:
            return self._validate()
        finally:
            set_rng_state(saved)

    def _validate(self) -> dict[str, float]:
        loader, sampler = self.val
        limit = self.cfg.early_stopping.max_batches
        self.module.eval()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in loader:
            if limit is not None and count >= limit:
                break
            with self.autocast():
                terms = self.module(self._on_device(batch))
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            count += 1
        self.module.train()
        return {k: float(distrib.all_reduce_mean(v / max(count, 1))) for k, v in sums.items()}

    def fit(self, progress: bool) -> str:
        """Train until ``optim.steps``, the time budget or early stopping; returns why it stopped."""
        cfg, main = self.cfg, self.env.is_main
        total = cfg.optim.steps
        self.module.train()
        batches = stream(self.loader, self.sampler)
        self.started, first_step, reason = time.time(), self.step, "steps"
        if self.stopper is not None and self.stopper.stopped:  # a resumed run that early stopping had ended
            return "early_stopping"
        loss: float | None = None
        with RunLog(self.out, main, after=self.step if cfg.resume else None) as run_log, \
                StepProgress(cfg.name, total, self.step, progress and main) as shown:
            while self.step < total:
                terms = self.train_step(batches)
                rate = (self.step - first_step) / max(time.time() - self.started, 1e-9)
                if self.step % cfg.optim.log_every == 0 or self.step == total:
                    record = {"step": self.step, "epoch": self.sampler.position.epoch, **self.schedule,
                              "seconds": round(self.elapsed(), 2),
                              "samples_per_s": round(rate * cfg.optim.batch_size, 2),
                              **{k: float(distrib.all_reduce_mean(v)) for k, v in terms.items()}}
                    if cfg.data.unreadable_images == "skip":
                        record["replaced_images"] = distrib.global_count(self.replaced, self.env.device)
                    run_log.write(record, "train")
                    loss = record["loss"]
                shown.update(self.step, rate, loss)
                stop = False
                if self.stopper is not None and self.step % cfg.early_stopping.every == 0:
                    values = self.validate()
                    run_log.write({"step": self.step, **{f"val_{k}": v for k, v in values.items()}}, "val")
                    if self.stopper.update(values[cfg.early_stopping.metric], self.step,
                                           lambda: self._weights(every_rank=True)):
                        stop, reason = True, "early_stopping"
                over = cfg.max_minutes is not None and time.time() - self.started > 60 * cfg.max_minutes
                if distrib.any_rank(over, self.env.device) and not stop:
                    stop, reason = True, "max_minutes"
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                    self.checkpoint()  # after this step's validation: a resumed run does not repeat it
                if stop:
                    break
        saved = cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0
        if not saved and (cfg.checkpoint.every or reason != "steps"):
            self.checkpoint()
        return reason

    def save_encoder(self, reason: str = "steps") -> Path:
        """Export the encoder (the best validation step's under early stopping with ``restore_best``), recording
        the step reached and ``reason``, why ``fit`` stopped; call once training ends: it may load other weights
        into the module."""
        exported = self.step
        if self.stopper is not None and self.stopper.snapshot is not None and self.stopper.best_step != self.step:
            exported = self.stopper.best_step
            log.info("exporting the encoder of step %d (best validation %s %.4g), not of the last step %d",
                     exported, self.cfg.early_stopping.metric, self.stopper.best, self.step)
            self._load_weights(self.stopper.snapshot)
        if self.ema is not None:
            self.ema.copy_to(self.module)
        self.objective.attach(self.model)
        self.model.seen_classes = list(self.class_names)
        directory = self.out / "checkpoint"
        weights, objective_state = None, None
        if self.sharded:
            gathered = self._weights()
            weights, objective_state = gathered["model"], gathered["objective"]
        if self.env.is_main:
            model_cfg = self.cfg.model
            tower = None if model_cfg.external else {"name": model_cfg.image_tower.name,
                                                     "kwargs": model_cfg.image_tower.kwargs}
            objective_state = objective_state or self.objective.state_dict()
            files = {OBJECTIVE_FILE: objective_state, **self.objective.checkpoint_files(objective_state)}
            extra = {"train_config": self.cfg.model_dump(), "step": exported, "external": model_cfg.external,
                     "trained_on": self.trained_on,
                     "stop": {"reason": reason, "step": self.step, "steps": self.cfg.optim.steps}}
            save_encoder(self.model.eval(), directory, tower, extra, weights, files)
        distrib.barrier()
        return directory


def pretrain(cfg: TrainConfig, data_root: str | None = None, progress: bool = True) -> Path:
    """Train (or resume, with ``cfg.resume``) and write ``<out>/checkpoint`` plus metrics; returns the
    checkpoint folder. Under ``torchrun`` every rank calls this."""
    owns_group = not dist.is_initialized()
    env = distrib.init_distributed(cfg.runtime.device)
    try:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, env, data_root)
        if cfg.resume:
            trainer.resume()
        elif env.is_main and (cleared := clear_states(cfg.out)):
            log.warning("%s: removed %d training states of an earlier run there (this is a new run; --resume "
                        "continues one)", Path(cfg.out) / "state", cleared)
        log.info("pretraining %s: %d labels, %d steps, %d rank(s) x micro-batch %d x accumulation %d",
                 cfg.objective.name, len(trainer.class_names), cfg.optim.steps, env.world_size,
                 trainer.micro_batch, cfg.optim.accumulation)
        reason = trainer.fit(progress)
        log.info("stopped at step %d (%s)", trainer.step, reason)
        return trainer.save_encoder(reason)
    finally:
        if owns_group:
            distrib.shutdown()
