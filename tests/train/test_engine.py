"""The engine: exact resume, training-state files, time budget, early stopping, parameter groups, sampling."""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import interrupted_copy, tiny_config

from radlab.data.records import RecordTable
from radlab.data.taxonomy import FINDING_NAMES
from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.checkpoint import load_encoder_checkpoint
from radlab.objectives.dinov2 import DINOv2Objective
from radlab.train import distributed
from radlab.train.engine import Trainer, TrainModule, pretrain
from radlab.train.loader import Position, RankedBatchSampler, SeededDataset
from radlab.train.optim import cosine_weight_decay, param_groups
from radlab.train.state import latest_state, load_state, rng_state, save_state, set_rng_state, state_paths
from run_logs import logged


def test_resume_continues_bit_identically(tmp_path: Path, phantom16: Path) -> None:
    """6 steps straight vs the step-3 state resumed in a fresh run: identical weights and optimiser.
    CLIP with a text tower exercises dropout (RNG state), EMA, accumulation and a mid-epoch data position."""
    extra = ["optim.steps=6", "optim.batch_size=8", "optim.accumulation=2", "ema={decay: 0.9}",
             "checkpoint={every: 3, keep_last: 5}"]
    straight = pretrain(tiny_config("clip", phantom16, tmp_path / "a", *extra), progress=False)
    resumed_out = interrupted_copy(tmp_path / "a", tmp_path / "b", 3)
    # 6 micro-batches of 4 into 16 records: the state stands mid-epoch 1
    assert load_state(resumed_out / "state" / "step_00000003.pt")["samples"] == 8
    torch.manual_seed(1234)  # a different process RNG state must not matter
    random.seed(99)
    resumed = pretrain(tiny_config("clip", phantom16, resumed_out, *extra, "resume=true"), progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = load_state(tmp_path / "a" / "state" / "step_00000006.pt"), load_state(latest_state(resumed_out))
    assert sb["step"] == 6
    for key in ("model", "objective"):
        assert all(torch.equal(sa[key][k], sb[key][k]) for k in sa[key])
    for pid, state in sa["optimizer"]["state"].items():
        assert all(torch.equal(v, sb["optimizer"]["state"][pid][k]) for k, v in state.items())
    assert all(torch.equal(v, sb["ema"]["shadow"][k]) for k, v in sa["ema"]["shadow"].items())
    steps = [r["step"] for r in logged(resumed_out)]
    assert steps == [4, 5, 6]


@pytest.mark.parametrize(("method", "start"), [("clip", "fork"), ("dinov2", "fork"), ("clip", "spawn")])
def test_loader_workers_do_not_change_the_run(method: str, start: str, tmp_path: Path, phantom16: Path) -> None:
    """Augmentations (DINOv2's multi-crop included) and batches are seeded per sample, so 2 loader workers train
    the same weights as loading in the training process; also when workers are spawned (macOS; forkserver, the
    default from Python 3.14, pickles the same way), which needs the dataset and collator to pickle."""
    extra = ["optim.steps=4", "optim.batch_size=8", "model.image_size=64"]
    single = pretrain(tiny_config(method, phantom16, tmp_path / "w0", *extra), progress=False)
    default = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(start, force=True)
    try:
        workers = pretrain(tiny_config(method, phantom16, tmp_path / "w2", *extra, "optim.num_workers=2"),
                           progress=False)
    finally:
        multiprocessing.set_start_method(default, force=True)
    a, b = (load_file(str(run / "model.safetensors")) for run in (single, workers))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_receive_no_model(tmp_path: Path, phantom16: Path) -> None:
    """What spawned or forkserver workers unpickle (dataset, sampler, collator) holds no parameter: tokenising
    happens in the training process, so no worker gets the text tower (or its GPU parameters)."""
    modules: list[str] = []

    class Spy(pickle.Pickler):
        def persistent_id(self, obj: object) -> None:
            if isinstance(obj, torch.nn.Module) and any(True for _ in obj.parameters()):
                modules.append(type(obj).__name__)

    trainer = Trainer(tiny_config("clip", phantom16, tmp_path, "optim.batch_size=8"), distributed.init_distributed("cpu"),
                      None)
    loader = trainer.loader
    Spy(io.BytesIO()).dump((loader.dataset, loader.batch_sampler, loader.collate_fn))
    assert not modules, modules
    batch = trainer._on_device(next(iter(loader)))
    assert torch.equal(batch["tokens"]["input_ids"], trainer.model.text_tower.tokenize(batch["text"])["input_ids"])


def test_states_are_atomic_pruned_and_load_without_pickles(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save_state(tmp_path, step, {"step": step, "rng": rng_state(), "w": torch.full((3,), float(step))}, 2)
    assert [p.name for p in state_paths(tmp_path)] == ["step_00000003.pt", "step_00000004.pt"]
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.startswith(".")]
    state = load_state(latest_state(tmp_path))  # weights_only=True inside
    assert state["step"] == 4 and torch.equal(state["w"], torch.full((3,), 4.0))
    assert isinstance(state["rng"]["torch"], torch.Tensor)


def test_rng_state_round_trips() -> None:
    saved = rng_state()
    first = (torch.rand(3), np.random.rand(2), random.random())
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_time_budget_stops_with_a_resumable_state(tmp_path: Path, phantom16: Path) -> None:
    checkpoint = pretrain(tiny_config("supervised", phantom16, tmp_path, "optim.steps=50", "optim.batch_size=8",
                                  "max_minutes=0"), progress=False)
    assert (checkpoint / "model.safetensors").exists()
    assert load_state(latest_state(tmp_path))["step"] == 1
    assert (tmp_path / "tb").is_dir()


def _exported_matches_state(checkpoint: Path, state: dict) -> bool:
    """The exported encoder holds the state's tower weights and its objective's class prototypes."""
    exported = load_file(str(checkpoint / "model.safetensors"))
    tower = {k: v for k, v in state["model"].items() if k.startswith("image_tower.")}
    prototypes = state["objective"]["head.prototypes"]
    return all(torch.equal(exported[k], v) for k, v in tower.items()) and \
        torch.equal(exported["label_head.prototypes"], prototypes)


def test_early_stopping_on_a_validation_term(tmp_path: Path, phantom_dir: Path) -> None:
    """min_delta so large that only the first evaluation improves: patience 1 stops at step 2, and the exported
    encoder is step 1's (the best), not step 2's; with restore_best=false it is step 2's."""
    stopping = "early_stopping={metric: bce, every: 1, patience: 1, min_delta: 1.0e+9, max_batches: 1%s}"
    extra = ["optim.steps=50", "optim.batch_size=8", "data.split_fractions={train: 0.8, val: 0.2}",
             "checkpoint={every: 1, keep_last: 5}"]
    best = pretrain(tiny_config("supervised", phantom_dir, tmp_path / "a", *extra, stopping % ""), progress=False)
    records = logged(tmp_path / "a")
    assert [r["step"] for r in records if "val_bce" in r] == [1, 2]
    states = {p.name: load_state(p) for p in state_paths(tmp_path / "a")}
    assert sorted(states) == ["step_00000001.pt", "step_00000002.pt"]
    assert _exported_matches_state(best, states["step_00000001.pt"])
    assert not _exported_matches_state(best, states["step_00000002.pt"])
    assert json.loads((best / "encoder.json").read_text())["step"] == 1
    from radlab.data.records import RecordTable
    from radlab.data.splits import assign_splits
    from radlab.evaluation.leakage import check_pretraining

    found = check_pretraining(best, assign_splits(RecordTable.read(phantom_dir), seed=0))  # val 0.8-1 = its test
    assert found.shared_patients == 0 and found.selected_on_patients == found.test_patients > 0
    assert found.unchecked == []  # today's records are those it trained on (encoder.json's trained_on)
    last = pretrain(tiny_config("supervised", phantom_dir, tmp_path / "b", *extra, stopping % ", restore_best: false"),
                    progress=False)
    assert _exported_matches_state(last, load_state(latest_state(tmp_path / "b")))


def test_validation_reads_images_without_the_training_augmentation(tmp_path: Path, phantom16: Path) -> None:
    """Early stopping selects on a loss over the validation images as evaluation reads them, not over randomly
    cropped, rotated and jittered views (single-view objectives); multi-view objectives keep their own views."""
    from radlab.data.dataset import RecordDataset

    stopping = "early_stopping={metric: bce, every: 1, patience: 1, max_batches: 1}"
    cfg = tiny_config("supervised", phantom16, tmp_path, "optim.batch_size=2",
                      "data.split_fractions={train: 0.8, val: 0.2}", stopping)
    trainer = Trainer(cfg, distributed.init_distributed("cpu"), None)
    loader, _ = trainer.val
    plain = RecordDataset(loader.dataset.dataset.table, trainer.model.preprocess, trainer.class_names)
    batch = next(iter(loader))
    expected = torch.stack([plain[int(i)]["image"] for i in batch["index"]])
    assert torch.equal(batch["image"], expected)
    dinov2 = Trainer(tiny_config("dinov2", phantom16, tmp_path / "dino", "data.split_fractions={train: 0.8, val: "
                                 "0.2}", "optim.batch_size=2", "early_stopping={metric: dino, every: 1, patience: 1, max_batches: 1}"),
                     distributed.init_distributed("cpu"), None)
    assert isinstance(next(iter(dinov2.val[0]))["image"], list)  # global and local crops, as in training


def test_resumed_run_exports_the_best_step_seen_before_the_interruption(tmp_path: Path, phantom_dir: Path) -> None:
    extra = ["optim.steps=3", "optim.batch_size=8", "data.split_fractions={train: 0.8, val: 0.2}",
             "checkpoint={every: 1, keep_last: 5}",
             "early_stopping={metric: bce, every: 1, patience: 5, min_delta: 1.0e+9, max_batches: 1}"]
    pretrain(tiny_config("supervised", phantom_dir, tmp_path / "a", *extra), progress=False)
    first = load_state(tmp_path / "a" / "state" / "step_00000001.pt")
    resumed_out = tmp_path / "b" / "state"
    resumed_out.mkdir(parents=True)
    second = tmp_path / "a" / "state" / "step_00000002.pt"
    (resumed_out / second.name).write_bytes(second.read_bytes())
    resumed = pretrain(tiny_config("supervised", phantom_dir, tmp_path / "b", *extra, "resume=true"), progress=False)
    assert load_state(latest_state(tmp_path / "b"))["step"] == 3
    assert _exported_matches_state(resumed, first)


def test_parameter_groups_layer_decay_and_no_decay() -> None:
    model = build_encoder(ModelConfig(image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 3}),
                                      text_tower=None, image_size=32))
    groups = param_groups(model, weight_decay=0.05, lr=1.0, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    lr = lambda name: by_param[id(named[name])]["lr"]  # noqa: E731
    wd = lambda name: by_param[id(named[name])]["weight_decay"]  # noqa: E731
    assert lr("image_tower.backbone.pos_embed") == 0.5 ** 4
    assert lr("image_tower.backbone.blocks.0.attn.qkv.weight") == 0.5 ** 3
    assert lr("image_tower.backbone.blocks.2.mlp.fc1.weight") == 0.5
    assert lr("image_proj.weight") == 1.0
    assert wd("image_tower.backbone.blocks.0.attn.qkv.weight") == 0.05 and wd("image_proj.weight") == 0.05
    for name in ("image_tower.backbone.blocks.0.norm1.weight", "image_tower.backbone.blocks.0.attn.qkv.bias",
                 "image_tower.backbone.pos_embed", "image_tower.backbone.cls_token"):
        assert wd(name) == 0.0
    assert sum(len(g["params"]) for g in groups) == len(named)
    scaled = param_groups(model, weight_decay=0.05, lr=1.0, layer_decay=0.5, patch_embed_lr_scale=0.2)
    by_param = {id(p): g for g in scaled for p in g["params"]}
    assert lr("image_tower.backbone.patch_embed.proj.weight") == pytest.approx(0.2 * 0.5 ** 4)
    assert lr("image_tower.backbone.pos_embed") == 0.5 ** 4
    assert lr("image_tower.backbone.blocks.0.attn.qkv.weight") == 0.5 ** 3
    module = TrainModule(model, DINOv2Objective(model, n_prototypes=8, hidden_dim=16, bottleneck_dim=8))
    by_param = {id(p): g for g in param_groups(module, 0.05, 1.0, 0.5) for p in g["params"]}
    assert by_param[id(module.objective.mask_token)]["lr"] == 0.5 ** 4, "iBOT's mask token is an embedding"
    assert by_param[id(module.objective.mask_token)]["weight_decay"] == 0.0


def test_weight_decay_follows_a_cosine_and_spares_undecayed_groups() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.04, lr=1e-3))
    values = [cosine_weight_decay(optimizer, step, 10, 0.04, 0.2) for step in range(11)]
    assert values[0] == pytest.approx(0.04) and values[5] == pytest.approx(0.12) and values[10] == pytest.approx(0.2)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays[id(model.weight)] == pytest.approx(0.2) and decays[id(model.bias)] == 0.0


def test_weight_decay_schedule_starting_at_zero_still_reaches_decaying_groups() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.0, lr=1e-3))
    cosine_weight_decay(optimizer, 10, 10, 0.0, 0.1)
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays[id(model.weight)] == pytest.approx(0.1) and decays[id(model.bias)] == 0.0


@pytest.mark.parametrize("start", [0, 3])
def test_ranks_split_the_single_process_batches(start: int) -> None:
    single = RankedBatchSampler(40, 8, seed=3)
    ranks = [RankedBatchSampler(40, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.position = Position(epoch=2, samples=start * 8)
    together = [a + b for a, b in zip(*ranks, strict=True)]
    assert together == list(single) and len(together) == 5 - start
    assert {i for batch in RankedBatchSampler(40, 8, seed=3) for _, i in batch} == set(range(40))


def test_seeded_samples_draw_from_the_cpu_generator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample i of epoch e draws the same numbers wherever it is loaded, and never reseeds CUDA's generators
    (torch.manual_seed would: ~1 ms a sample, and the GPU's dropout stream reseeded by the data)."""
    reseeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    draws = SeededDataset(_Draw(), seed=5)
    first = draws[(1, 2)]
    torch.default_generator.manual_seed(123)  # the process's generator state does not matter, and is kept
    before = torch.get_rng_state()
    assert torch.equal(draws[(1, 2)], first) and not torch.equal(draws[(2, 2)], first)
    assert torch.equal(torch.get_rng_state(), before)
    assert reseeded == []


class _Draw:
    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3)


def test_pretraining_on_evaluation_patients_is_refused_unless_forced(tmp_path: Path, phantom16: Path) -> None:
    from radlab.data.audit import LeakageError

    eval_sources = f"data.eval_sources=[{{source: phantom, path: {phantom16}}}]"
    with pytest.raises(LeakageError, match="shared patients"):
        pretrain(tiny_config("supervised", phantom16, tmp_path / "a", "optim.steps=1", "optim.batch_size=8",
                         eval_sources), progress=False)
    forced = tiny_config("supervised", phantom16, tmp_path / "b", "optim.steps=1", "optim.batch_size=8", eval_sources,
                     "data.allow_eval_overlap=true")
    assert (pretrain(forced, progress=False) / "model.safetensors").exists()


def test_redirected_training_writes_progress_lines(tmp_path: Path, phantom16: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    from radlab import progress

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    cfg = tiny_config("supervised", phantom16, tmp_path, "optim.steps=3", "optim.batch_size=8", "optim.log_every=2")
    pretrain(cfg, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{cfg.name}: ")]
    assert [line.split(",")[0] for line in lines] == [f"{cfg.name}: {k}/3" for k in (1, 2, 3)]
    assert "loss" not in lines[0], "no loss is shown before the first logged step"
    assert all(re.search(r", loss \d", line) for line in lines[1:])


def test_sources_that_reencode_the_same_images_get_an_image_audit(tmp_path: Path, phantom16: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from data import fixtures as fx
    from radlab.data.audit import share_images
    from radlab.train import setup

    assert share_images("nih", "rsna_pneumonia") and share_images("rsna_pneumonia", "siim")
    assert not share_images("nih", "nih") and not share_images("nih", "chexpert")
    calls: list[bool] = []

    class Audited(Exception):
        pass

    def spy(train_table, evals, force=False, images=False):
        calls.append(images)
        raise Audited

    monkeypatch.setattr(setup, "refuse_overlap", spy)
    rsna = fx.build_rsna(tmp_path / "rsna")
    nih = fx.build_nih(tmp_path / "nih")
    for source, expected in (("nih", True), ("auto", True), ("phantom", False)):
        data = phantom16 if source == "phantom" else nih
        cfg = tiny_config("supervised", data, tmp_path / source, "optim.steps=1",
                      f"data.sources=[{{source: {source}, path: {data}}}]",
                      f"data.eval_sources=[{{source: rsna_pneumonia, path: {rsna}}}]")
        with pytest.raises(Audited):
            pretrain(cfg, progress=False)
        assert calls[-1] is expected


def test_each_step_clamps_learned_temperatures(tmp_path: Path, phantom16: Path) -> None:
    from radlab.models import load_encoder

    cfg = tiny_config("supervised", phantom16, tmp_path, "optim.steps=1", "optim.batch_size=8",
                  "objective.kwargs={uncertain: ignore, init_temperature: 0.005}")  # scale 200 > 100
    head = load_encoder(pretrain(cfg, progress=False)).label_head
    assert head.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)


def _tensors(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / name))


def test_init_from_starts_a_run_on_a_checkpoints_encoder_and_objective(tmp_path: Path, phantom16: Path) -> None:
    """CLIP trained, then continued with lr 0: the new run exports the same towers, projections, tokenizer and
    learned temperature. A supervised run from the CLIP checkpoint takes its image tower and starts its head
    fresh; a CLIP run from that (image-only) checkpoint starts a fresh text tower."""
    first = pretrain(tiny_config("clip", phantom16, tmp_path / "clip", "optim.steps=3", "optim.batch_size=8"),
                     progress=False)
    frozen = ["optim.steps=1", "optim.batch_size=8", "optim.lr=0", f"init_from={first}"]
    again = pretrain(tiny_config("clip", phantom16, tmp_path / "again", *frozen), progress=False)
    a, b = _tensors(first), _tensors(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(_tensors(first, "objective.safetensors")["logit_scale.log_scale"],
                       _tensors(again, "objective.safetensors")["logit_scale.log_scale"])
    vocab = [json.loads(p.read_text())["model"]["vocab"] for p in (tmp_path / "again" / "tokenizer" / "tokenizer.json",
                                                                   first / "text_tower" / "tokenizer.json")]
    assert vocab[0] == vocab[1]
    labels = pretrain(tiny_config("supervised", phantom16, tmp_path / "labels", *frozen), progress=False)
    c = _tensors(labels)
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith(("image_tower.", "image_proj.")))
    assert not any(k.startswith("text_") for k in c) and "label_head.prototypes" in c
    text_later = pretrain(tiny_config("clip", phantom16, tmp_path / "text", *frozen[:3], f"init_from={labels}"),
                          progress=False)
    d = _tensors(text_later)
    assert all(torch.equal(c[k], d[k]) for k in c if k.startswith("image_tower.")) and "text_proj.weight" in d


def test_init_from_refuses_a_checkpoint_that_does_not_fit(tmp_path: Path, phantom16: Path) -> None:
    first = pretrain(tiny_config("supervised", phantom16, tmp_path / "a", "optim.steps=1", "optim.batch_size=8"),
                     progress=False)
    deeper = tiny_config("supervised", phantom16, tmp_path / "b", "optim.steps=1", "optim.batch_size=8",
                     "model.image_tower.kwargs={depth: 2}", f"init_from={first}")
    with pytest.raises(ValueError, match="model.safetensors does not fit"):
        pretrain(deeper, progress=False)
    with pytest.raises(FileNotFoundError, match="not a radlab checkpoint"):
        pretrain(tiny_config("supervised", phantom16, tmp_path / "c", "optim.steps=1", f"init_from={tmp_path}"),
                 progress=False)


def test_train_subset_pretrains_on_a_fraction_of_the_training_patients(tmp_path: Path, phantom_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=1", "optim.batch_size=8",
                  "data.train_subset={fraction: 0.1, seed: 1}")
    with caplog.at_level("INFO", logger="radlab.train.setup"):
        pretrain(cfg, progress=False)
    patients = RecordTable.read(phantom_dir).frame["patient_id"].nunique()
    assert f"pre-training on {math.ceil(0.1 * patients)} of {patients} training patients" in caplog.text
    seen = load_encoder_checkpoint(tmp_path / "checkpoint").seen_classes  # what the subset's labels annotate
    assert seen and set(seen) <= set(FINDING_NAMES) and "label_head.prototypes" in _tensors(tmp_path / "checkpoint")
    assert seen == json.loads((tmp_path / "checkpoint" / "encoder.json").read_text())["label_head"]["class_names"]
