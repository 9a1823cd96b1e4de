"""DINOv2 objective: masking, multi-crop, teacher EMA and schedules, collapse monitors, and learning on
phantoms (the trained tower's probe beats the same tower at random init on held-out patients)."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from radlab.data.augment import MultiCrop, local_crop_size
from radlab.data.loading import load_tables
from radlab.data.splits import DEFAULT_FRACTIONS
from radlab.evaluation.runner import evaluate
from radlab.models import load_encoder
from radlab.models.build import build_encoder
from radlab.models.checkpoint import OBJECTIVE_FILE
from radlab.models.dino_checkpoint import HEAD_FILE, load_head_state
from radlab.models.encoder import RadEncoder
from radlab.models.export import export_checkpoint
from radlab.models.image_towers import IMAGE_TOWERS
from radlab.models.vit_masking import masked_forward
from radlab.objectives.dinov2 import DINOv2Objective, batch_masks, block_mask
from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain
from radlab.train.initial_weights import load_objective_state
from radlab.train.setup import seed_everything, training_labels
from radlab.train.state import latest_state, load_state
from run_logs import logged

TINY_TOWER = {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}
TINY_HEADS = {"n_prototypes": 64, "hidden_dim": 64, "bottleneck_dim": 32}


def tiny_model(size: int = 32) -> RadEncoder:
    torch.manual_seed(0)
    return RadEncoder(IMAGE_TOWERS.build("vit_tiny_patch16_224", image_size=size, **TINY_TOWER), None, 16)


def multi_crop_batch(objective: DINOv2Objective, n: int = 8, size: int = 32) -> dict:
    transform = objective.train_transform(size)
    views = [transform(image) for image in torch.rand(n, 1, size, size)]
    return {"image": [torch.stack([v[k] for v in views]) for k in range(len(views[0]))]}


def test_block_mask_hits_target_and_batch_masks_follow_dinov2() -> None:
    rng = random.Random(0)
    for target in (2, 6, 13, 25):
        mask = block_mask(8, 8, target, rng)
        assert 0 < int(mask.sum()) <= target and int(mask.sum()) >= 0.5 * target
    masks = batch_masks(20, (8, 8), 0.5, (0.1, 0.5), rng)
    counts = masks.sum(1)
    assert masks.shape == (20, 64) and int((counts > 0).sum()) == 10
    assert counts.max() <= 0.5 * 64 and counts[counts > 0].min() >= 1


def test_multicrop_views_and_grayscale_range() -> None:
    views = MultiCrop(64, 24, n_local=3)(torch.rand(1, 80, 80))
    assert [tuple(v.shape) for v in views] == [(1, 64, 64)] * 2 + [(1, 24, 24)] * 3
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in views)


def test_local_crops_are_whole_patches_of_the_tower() -> None:
    """A patch embedding drops the pixels past the last whole patch: local crops are sized in the tower's patches
    (DINOv2's 98 px at 224 px with 14 px patches), and a local size that is not is refused."""
    assert local_crop_size(224, 14) == 98 and local_crop_size(128, 16) == 64 and local_crop_size(32, 16) == 16
    objective = DINOv2Objective(tiny_model(), n_local=2, **TINY_HEADS)
    local = multi_crop_batch(objective, n=2)["image"][2]
    assert local.shape[-1] == 16 and local.shape[-1] % TINY_TOWER["patch_size"] == 0
    with pytest.raises(ValueError, match="local_size 20 is not a multiple of the tower's 8 px patches"):
        DINOv2Objective(tiny_model(), local_size=20, **TINY_HEADS)


def test_masked_forward_uses_mask_token_only_where_masked() -> None:
    model = tiny_model().eval()
    images = torch.randn(2, 1, 32, 32)
    pooled, patches = masked_forward(model.image_tower, images)
    torch.testing.assert_close(pooled, model.image_features(images))
    torch.testing.assert_close(patches, model.image_output(images).tokens)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :5] = True
    token = torch.randn(model.image_tower.embed_dim)
    masked_pooled, _ = masked_forward(model.image_tower, images, mask, token)
    assert not torch.allclose(masked_pooled[0], pooled[0]) and torch.allclose(masked_pooled[1], pooled[1])


def test_teacher_is_frozen_ema_and_schedules_follow_dinov2() -> None:
    model = tiny_model()
    objective = DINOv2Objective(model, n_local=2, local_size=16, **TINY_HEADS).train()
    assert all(not p.requires_grad for p in objective.teacher.parameters())
    assert not objective.teacher.training and objective.heads.training
    optimizer = torch.optim.SGD([p for m in (model, objective) for p in m.parameters() if p.requires_grad], lr=0.1)
    terms = objective(model, multi_crop_batch(objective))
    for key in ("dino", "ibot", "koleo", "teacher_entropy", "teacher_usage_entropy", "feature_rank"):
        assert key in terms and torch.isfinite(terms[key]) and not terms[key].requires_grad
    terms["loss"].backward()
    assert all(p.grad is None for p in objective.teacher.parameters())
    optimizer.step()
    student = next(model.image_tower.parameters()).detach().clone()
    teacher_before = next(objective.teacher["image_tower"].parameters()).detach().clone()
    objective.after_step(model, 1, 10)
    expected = 0.992 * teacher_before + 0.008 * student
    torch.testing.assert_close(next(objective.teacher["image_tower"].parameters()), expected)
    assert float(objective.momentum) == pytest.approx(1 - 0.008 * (math.cos(math.pi * 0.1) + 1) / 2)
    assert float(objective.teacher_temp) == pytest.approx(0.04 + 0.03 * 1 / 3)
    objective.after_step(model, 10, 10)
    assert float(objective.momentum) == pytest.approx(1.0) and float(objective.teacher_temp) == pytest.approx(0.07)


def test_dinov2_warns_when_its_teacher_is_flat(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model()
    flat = DINOv2Objective(model, n_local=2, local_size=16, teacher_temp=50.0, warmup_teacher_temp=50.0,
                           **TINY_HEADS).train()
    with caplog.at_level(logging.WARNING, logger="radlab.objectives.collapse"):
        for step in range(1, 4):
            flat(model, multi_crop_batch(flat))
            flat.after_step(model, step, 3)
    warnings = [r.getMessage() for r in caplog.records if "collapse" in r.getMessage()]
    assert len(warnings) == 1 and "uniform collapse" in warnings[0]


def test_eval_mode_leaves_centers_alone_and_attach_exports_teacher() -> None:
    model = tiny_model()
    objective = DINOv2Objective(model, n_local=0, **TINY_HEADS).eval()
    center = objective.dino_loss.center.clone()
    objective(model, {"image": torch.randn(4, 1, 32, 32)})
    torch.testing.assert_close(objective.dino_loss.center, center)
    with torch.no_grad():
        for p in objective.teacher["image_tower"].parameters():
            p.add_(1.0)
    objective.attach(model)
    torch.testing.assert_close(next(model.image_tower.parameters()),
                               next(objective.teacher["image_tower"].parameters()))


def test_sinkhorn_and_separate_ibot_head_train() -> None:
    model = tiny_model()
    objective = DINOv2Objective(model, n_local=2, local_size=16, centering="sinkhorn_knopp",
                                ibot_separate_head=True, ibot_n_prototypes=32, **TINY_HEADS).train()
    assert objective.heads["ibot_head"].last_layer.weight_v.shape[0] == 32
    terms = objective(model, multi_crop_batch(objective))
    terms["loss"].backward()
    assert objective.heads["ibot_head"].mlp[0].weight.grad is not None


def test_unused_parameters_are_the_projections_and_idle_mask_token() -> None:
    model = tiny_model()
    projections = {id(p) for p in model.image_proj.parameters()}
    with_ibot = DINOv2Objective(model, **TINY_HEADS)
    without_ibot = DINOv2Objective(model, ibot_weight=0.0, **TINY_HEADS)
    assert {id(p) for p in with_ibot.unused_parameters(model)} == projections
    assert {id(p) for p in without_ibot.unused_parameters(model)} == projections | {id(without_ibot.mask_token)}


def test_masks_differ_by_step_and_repeat_for_the_same_step() -> None:
    objective = DINOv2Objective(tiny_model(), **TINY_HEADS)
    draw = lambda: batch_masks(8, (4, 4), 0.5, (0.1, 0.5), objective._mask_rng())  # noqa: E731
    first = draw()
    objective.steps_done.fill_(1)
    assert not torch.equal(first, draw())
    objective.steps_done.fill_(0)
    objective._draws = {True: (-1, 0), False: (-1, 0)}
    assert torch.equal(first, draw())


def tiny_config(phantom_dir: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": "dinov2-test", "seed": 0, "out": str(out),
        "objective": {"name": "dinov2", "kwargs": {**TINY_HEADS, "n_local": 2, "local_size": 16,
                                                   "freeze_last_layer_steps": 2, "momentum": 0.9}},
        "model": {"image_tower": {"name": "vit_tiny_patch16_224", "kwargs": TINY_TOWER}, "text_tower": None,
                  "image_size": 32, "embed_dim": 16},
        "data": {"sources": [{"source": "phantom", "path": str(phantom_dir)}]},
        "optim": {"steps": steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 5, "weight_decay": 0.04,
                  "layer_decay": 0.9, "log_every": 5, "grad_clip": 3.0},
        "runtime": {"device": "cpu"}})


def test_checkpoint_files_hold_the_heads_of_the_exported_backbone() -> None:
    objective = DINOv2Objective(tiny_model(), export="student", ibot_separate_head=True, **TINY_HEADS)
    for param in objective.teacher.parameters():
        param.data.add_(1.0)  # teacher and student heads now differ
    (name, heads), = objective.checkpoint_files(objective.state_dict()).items()
    assert name == HEAD_FILE
    expected = {f"{head}.{k}": v for head in ("dino_head", "ibot_head")
                for k, v in objective.heads[head].state_dict().items()}
    assert heads.keys() == expected.keys() and all(torch.equal(heads[k], expected[k]) for k in expected)


def test_a_run_continues_from_its_own_checkpoint_with_its_teacher_heads(phantom_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(phantom_dir, tmp_path / "run", steps=4)
    cfg.checkpoint.every = 4
    folder = pretrain(cfg, progress=False)
    assert (folder / HEAD_FILE).is_file()
    teacher = load_state(latest_state(tmp_path / "run"))["objective"]
    saved = load_head_state(folder)["dino_head"]
    assert all(torch.equal(v, teacher[f"teacher.dino_head.{k}"]) for k, v in saved.items())
    fresh = DINOv2Objective(tiny_model(), **TINY_HEADS).heads["dino_head"].state_dict()
    assert not torch.equal(saved["mlp.0.weight"], fresh["mlp.0.weight"]), "the heads were trained"
    continued = DINOv2Objective(tiny_model(), init_heads=str(folder), **TINY_HEADS)
    for heads in (continued.heads, continued.teacher):
        assert all(torch.equal(v, saved[k]) for k, v in heads["dino_head"].state_dict().items())
    # the backbone, as docs/training.md says: export, then start the tower from the exported timm weights
    export_checkpoint(folder, tmp_path / "export")
    exported_heads = load_head_state(tmp_path / "export")["dino_head"]
    assert all(torch.equal(v, saved[k]) for k, v in exported_heads.items())
    weights = str(tmp_path / "export" / "image" / "model.safetensors")
    tower = cfg.model.image_tower.model_copy(update={"kwargs": {**TINY_TOWER, "checkpoint_path": weights}})
    started = build_encoder(cfg.model.model_copy(update={"image_tower": tower})).image_tower.state_dict()
    exported = load_encoder(folder).image_tower.state_dict()
    assert started.keys() == exported.keys() and all(torch.equal(started[k], exported[k]) for k in exported)


def test_a_new_run_from_a_checkpoint_keeps_what_was_learned_and_restarts_the_schedules(phantom_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """init_from: teacher, heads and centre as saved; momentum, teacher temperature and step count as at step 0
    (the last layer is frozen again, the temperature warms up again)."""
    folder = pretrain(tiny_config(phantom_dir, tmp_path / "run", steps=4), progress=False)
    saved = load_file(str(folder / OBJECTIVE_FILE))
    assert int(saved["steps_done"]) == 4 and float(saved["momentum"]) > 0.9
    objective = DINOv2Objective(tiny_model(), n_local=2, local_size=16, momentum=0.9, **TINY_HEADS)
    assert load_objective_state(objective, "dinov2", folder)
    assert int(objective.steps_done) == 0 and float(objective.momentum) == pytest.approx(0.9)
    assert float(objective.teacher_temp) == pytest.approx(0.04)
    kept = objective.state_dict()
    learned = [k for k in saved if k.startswith(("teacher.", "heads.", "dino_loss.center"))]
    assert learned and all(torch.equal(kept[k], saved[k]) for k in learned)


@pytest.mark.slow
def test_dinov2_pretraining_beats_random_init_on_held_out_patients(phantom_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(phantom_dir, tmp_path / "run", steps=30)
    trained = load_encoder(pretrain(cfg, progress=False)).eval()
    seed_everything(0)
    random_init = build_encoder(cfg.model).eval()
    table = load_tables([("phantom", str(phantom_dir))], DEFAULT_FRACTIONS, seed=0)
    labels = training_labels(table.split("train"), None)
    results = evaluate(trained, table, ["linear_probe"], labels, n_boot=50, compare=random_init)
    ours = results["tasks"]["linear_probe"]["macro_auc"]
    baseline = results["baseline"]["tasks"]["linear_probe"]["macro_auc"]
    assert ours > baseline + 0.01, (ours, baseline)
    records = logged(tmp_path / "run")
    assert len(records) >= 2 and all(np.isfinite(r["loss"]) for r in records)
    assert records[-1]["teacher_entropy"] < math.log(TINY_HEADS["n_prototypes"]) - 0.1, "uniform collapse"


def test_a_frozen_last_layer_gets_no_gradient_so_adamw_neither_moves_nor_counts_it() -> None:
    model = tiny_model()
    objective = DINOv2Objective(model, n_local=2, local_size=16, freeze_last_layer_steps=1, **TINY_HEADS).train()
    last = [p for p in objective.heads["dino_head"].last_layer.parameters() if p.requires_grad]
    assert last, "the prototypes' direction (weight_v) trains"
    before = [p.detach().clone() for p in last]
    optimizer = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=1e-2, weight_decay=0.1)
    objective(model, multi_crop_batch(objective))["loss"].backward()
    objective.before_optimizer_step()
    assert all(p.grad is None for p in last)
    optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(last, before, strict=True))
    assert all(p not in optimizer.state for p in last), "no Adam moments or step count while frozen"
    objective.steps_done.fill_(1)
    optimizer.zero_grad()
    objective(model, multi_crop_batch(objective))["loss"].backward()
    objective.before_optimizer_step()
    assert all(p.grad is not None for p in last)


def test_validation_draws_masks_apart_from_training() -> None:
    objective = DINOv2Objective(tiny_model(), **TINY_HEADS).train()
    draw = lambda: batch_masks(8, (4, 4), 0.5, (0.1, 0.5), objective._mask_rng())  # noqa: E731
    straight = [draw(), draw()]
    objective._draws = {True: (-1, 0), False: (-1, 0)}
    first = draw()
    objective.eval()
    validation = draw()
    objective.train()
    assert torch.equal(first, straight[0]) and torch.equal(draw(), straight[1])
    assert not torch.equal(validation, straight[1])
