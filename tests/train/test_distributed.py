"""Two gloo processes on CPU against one process with the same global batch: contrastive losses gathered with
gradients, and a few engine steps under DDP."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_runs import interrupted_copy

from radlab.models.dino_checkpoint import HEAD_FILE
from radlab.objectives.clip import clip_loss
from radlab.objectives.medclip import medclip_loss
from radlab.objectives.simclr import nt_xent
from radlab.objectives.unicl import unicl_loss
from radlab.train.state import latest_state, load_state
from ranks import free_port, start_ranks
from run_logs import logged

N, D_IN, D = 8, 6, 5
# (image rows per rank, text rows per rank): equal halves, uneven counts (e.g. only samples with text), and
# one rank without rows (its micro-batch held no report).
SPLITS = {"halves": ([4, 4], [4, 4]), "uneven": ([3, 5], [3, 5]), "one_empty": ([0, 8], [0, 8])}
UNPAIRED_TEXT = [1, 4]  # MedCLIP: 5 texts against 8 images, split 1 + 4


def _setup() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    data = {"x_image": torch.randn(N, D_IN, generator=g, dtype=torch.float64),
            "x_text": torch.randn(N, D_IN, generator=g, dtype=torch.float64),
            "labels": (torch.rand(N, 3, generator=g) < 0.4).double(), "ids": torch.arange(N)}
    params = {"w_image": torch.randn(D_IN, D, generator=g, dtype=torch.float64).requires_grad_(),
              "w_text": torch.randn(D_IN, D, generator=g, dtype=torch.float64).requires_grad_(),
              "log_scale": torch.tensor(2.0, dtype=torch.float64).requires_grad_()}
    return data, params


def _loss(name: str, data: dict, p: dict, rows: slice, text_rows: slice) -> torch.Tensor:
    image = F.normalize(data["x_image"][rows] @ p["w_image"], dim=-1)
    scale = p["log_scale"].exp()
    if name == "medclip":
        text = F.normalize(data["x_text"][text_rows] @ p["w_text"], dim=-1)
        return medclip_loss(image, text, data["labels"][rows], data["labels"][text_rows], data["ids"][rows],
                            data["ids"][text_rows], scale, 0.5)
    text = F.normalize(data["x_text"][rows] @ p["w_text"], dim=-1)
    if name == "clip":
        return clip_loss(image, text, scale)
    return unicl_loss(image, text, data["labels"][rows], data["labels"][rows], scale)


def _cases() -> list[tuple[str, str, list[int], list[int]]]:
    cases = [(loss, split, *SPLITS[split]) for loss in ("clip", "unicl") for split in SPLITS]
    return cases + [("medclip", "uneven", SPLITS["uneven"][0], UNPAIRED_TEXT)]


def _rows(sizes: list[int], rank: int) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _loss_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for name, split, image_sizes, text_sizes in _cases():
        data, params = _setup()
        loss = _loss(name, data, params, _rows(image_sizes, rank), _rows(text_sizes, rank))
        loss.backward()
        values = [loss.detach()] + [params[k].grad for k in sorted(params)]
        for v in values:  # what DDP does: average over ranks
            dist.all_reduce(v)
            v /= world
        results[f"{name}/{split}"] = torch.cat([v.flatten() for v in values])
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    start_ranks(_loss_worker, (2, free_port(), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, split, _, _ in _cases():
        data, params = _setup()
        loss = _loss(name, data, params, slice(0, N), slice(0, N if name != "medclip" else sum(UNPAIRED_TEXT)))
        loss.backward()
        single = torch.cat([loss.detach().flatten()] + [params[k].grad.flatten() for k in sorted(params)])
        for r in range(2):
            assert torch.allclose(ranks[r][f"{name}/{split}"], single, atol=1e-6, rtol=0), (name, split, r)


def _simclr_loss(rows: slice) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """NT-Xent between two "views" (the image and text inputs) through one shared projection, as in SimCLR."""
    data, p = _setup()
    return nt_xent(data["x_image"][rows] @ p["w_image"], data["x_text"][rows] @ p["w_image"], 0.2), [p["w_image"]]


def _gloria_loss(rows: slice) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """GLoRIA's local loss on regions [n, 4, D_IN] and words [n, W, D_IN] of reports of 1-5 words, cut to the
    rows' longest report (so ranks hold different word counts)."""
    from radlab.objectives.gloria import local_loss

    g = torch.Generator().manual_seed(2)
    regions = torch.randn(N, 4, D_IN, generator=g, dtype=torch.float64)
    words = torch.randn(N, 5, D_IN, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 2, 3, 2, 4, 1, 3])
    w_image, w_text = (torch.randn(D_IN, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    width = max(lengths[rows].tolist(), default=1)  # a rank without reports still sends one (empty) word slot
    mask = torch.arange(width)[None] < lengths[rows, None]
    loss = local_loss(regions[rows] @ w_image, words[rows, :width] @ w_text, mask, 4.0, 5.0, 10.0)
    return loss, [w_image, w_text]


ROW_LOSSES = {"simclr": _simclr_loss, "gloria": _gloria_loss}


def _loss_and_grads(name: str, rows: slice) -> torch.Tensor:
    loss, params = ROW_LOSSES[name](rows)
    loss.backward()
    return torch.cat([loss.detach().flatten()] + [p.grad.flatten() for p in params])


def _row_loss_worker(rank: int, world: int, port: int, out: str, name: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for split, (sizes, _) in SPLITS.items():
        values = _loss_and_grads(name, _rows(sizes, rank))
        dist.all_reduce(values)  # what DDP does with the gradients (and the logger with the loss): the mean
        results[split] = values / world
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("name", list(ROW_LOSSES))
def test_row_losses_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path, name: str) -> None:
    """SimCLR: NT-Xent negatives come from the global batch, 2N-2 per view, not 2B_local-2 (the reference's
    cross-replica concat). GLoRIA: every image is scored against every report of the global batch, each rank's
    reports padded to the longest of any rank before the gather. Equal, uneven and empty per-rank rows."""
    start_ranks(_row_loss_worker, (2, free_port(), str(tmp_path), name))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = _loss_and_grads(name, slice(0, N))
    for split in SPLITS:
        for r in range(2):
            assert torch.allclose(ranks[r][split], single, atol=1e-6, rtol=0), (name, split, r)


def _engine_worker(rank: int, world: int, port: int, overrides: list[str], config: str = "supervised") -> None:
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    pretrain(TrainConfig.from_file(Path(__file__).parents[2] / "configs" / f"{config}.yaml", overrides),
             progress=False)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_engine_two_ranks_match_one_rank(tmp_path: Path, phantom_dir: Path, strategy: str) -> None:
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    common = ["optim.steps=3", "optim.batch_size=16", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={depth: 2}", f"data.sources=[{{source: phantom, path: {phantom_dir}}}]",
              "runtime.device=cpu", f"runtime.strategy={strategy}", "checkpoint={every: 3, keep_last: 1}"]
    single = pretrain(TrainConfig.from_file(Path(__file__).parents[2] / "configs" / "supervised.yaml",
                                            [*common, f"out={tmp_path / 'one'}"]), progress=False)
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'two'}"]))
    one = load_file(str(single / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"2 ranks vs 1 rank after 3 {strategy} steps: max |weight difference| {worst:.2e}")
    assert worst < 1e-4, worst
    one_state = load_state(latest_state(tmp_path / "one"))
    two_state = load_state(latest_state(tmp_path / "two"))
    assert one_state["model"].keys() == two_state["model"].keys()
    assert max(float((one_state["model"][k] - two_state["model"][k]).abs().max()) for k in one_state["model"]) < 1e-4


def test_fsdp_resume_continues_exactly(tmp_path: Path, phantom_dir: Path) -> None:
    """Sharded 2-rank run: 4 steps straight vs resumed from the step-2 (gathered) state."""
    common = ["optim.steps=4", "optim.batch_size=16", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={depth: 2}", f"data.sources=[{{source: phantom, path: {phantom_dir}}}]",
              "runtime.device=cpu", "runtime.strategy=fsdp", "checkpoint={every: 2, keep_last: 2}"]
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'a'}"]))
    interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'b'}", "resume=true"]))
    a = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_resume_of_dinov2_with_a_frozen_last_layer_continues_exactly(tmp_path: Path, phantom_dir: Path) -> None:
    """The step-2 state holds no optimiser state for the still-frozen prototypes (no gradient yet): loading it
    leaves them without, as the straight run had them, instead of refusing or inventing a step."""
    common = ["optim.steps=4", "optim.batch_size=8", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={patch_size: 8, depth: 2, embed_dim: 48, num_heads: 3}",
              f"data.sources=[{{source: phantom, path: {phantom_dir}}}]", "runtime.device=cpu",
              "runtime.strategy=fsdp", "objective.kwargs.n_local=2", "objective.kwargs.local_size=16",
              "objective.kwargs.n_prototypes=32", "objective.kwargs.freeze_last_layer_steps=3",
              "checkpoint={every: 2, keep_last: 2}"]
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'a'}"], "dinov2"))
    interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'b'}", "resume=true"], "dinov2"))
    a, b = (load_state(latest_state(tmp_path / run)) for run in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["objective"][k], b["objective"][k]) for k in a["objective"])


def test_fsdp_early_stopping_exports_the_best_step(tmp_path: Path, phantom_dir: Path) -> None:
    """Only the first validation improves (huge min_delta): the sharded run gathers step 1's weights as its
    best snapshot and scatters them back before export."""
    common = ["optim.steps=3", "optim.batch_size=16", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={depth: 2}", f"data.sources=[{{source: phantom, path: {phantom_dir}}}]",
              "data.split_fractions={train: 0.7, val: 0.3}", "runtime.device=cpu", "runtime.strategy=fsdp",
              "checkpoint={every: 1, keep_last: 3}", f"out={tmp_path}",
              "early_stopping={metric: bce, every: 1, patience: 5, min_delta: 1.0e+9, max_batches: 1}"]
    start_ranks(_engine_worker, (2, free_port(), common))
    exported = load_file(str(tmp_path / "checkpoint" / "model.safetensors"))
    first, last = (load_state(tmp_path / "state" / f"step_0000000{s}.pt")["model"] for s in (1, 3))
    tower = [k for k in first if k.startswith("image_tower.")]
    assert all(torch.equal(exported[k], first[k]) for k in tower)
    assert not all(torch.equal(exported[k], last[k]) for k in tower)


def test_fsdp_shards_every_transformer_block() -> None:
    from radlab.models.build import ModelConfig, TowerConfig, build_encoder
    from radlab.models.tokenizer import train_wordpiece
    from radlab.train.sharding import shard_units

    cfg = ModelConfig(image_size=32, image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"depth": 3}),
                      text_tower=TowerConfig(name="bert_small", kwargs={"layers": 2, "hidden_size": 32, "heads": 2}))
    model = build_encoder(cfg, train_wordpiece(["no effusion", "mild cardiomegaly"], 50))
    names = [type(u).__name__ for u in shard_units(model)]
    assert names.count("Block") == 3 and names.count("BertLayer") == 2 and len(names) == 5


def _teacher_logits() -> torch.Tensor:
    return torch.randn(N, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3


def _teacher_worker(rank: int, world: int, port: int, out: str) -> None:
    from radlab.objectives.dino_losses import DINOLoss, sinkhorn_knopp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = _rows(SPLITS["uneven"][0], rank)
    loss = DINOLoss(7, centering="centering")
    loss.targets(_teacher_logits()[rows], 0.05)
    torch.save({"sinkhorn": sinkhorn_knopp(_teacher_logits()[rows], 0.05), "center": loss.center},
               Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_dino_teacher_targets_see_the_global_batch(tmp_path: Path) -> None:
    """Sinkhorn-Knopp targets and the DINO center from uneven per-rank rows equal one process's on all rows."""
    from radlab.objectives.dino_losses import DINOLoss, sinkhorn_knopp

    start_ranks(_teacher_worker, (2, free_port(), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = DINOLoss(7, centering="centering")
    single.targets(_teacher_logits(), 0.05)
    targets = sinkhorn_knopp(_teacher_logits(), 0.05)
    assert not torch.allclose(targets[:3], sinkhorn_knopp(_teacher_logits()[:3], 0.05), atol=1e-3)
    for r in range(2):
        assert torch.allclose(ranks[r]["center"], single.center, atol=1e-6)
        assert torch.allclose(ranks[r]["sinkhorn"], targets[_rows(SPLITS["uneven"][0], r)].float(), atol=1e-5)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dinov2_two_ranks_match_one_rank(tmp_path: Path, phantom_dir: Path, strategy: str) -> None:
    """EMA teacher, all-reduced centers and the teacher export agree with one process on the global batch.
    KoLeo (per-rank nearest neighbours, as in DINOv2) and iBOT (per-rank masks) are off for the comparison; the
    separate iBOT head that leaves idle is frozen (DDP would stop at step 2 on its missing gradients)."""
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    common = ["optim.steps=3", "optim.batch_size=8", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={patch_size: 8, depth: 2, embed_dim: 48, num_heads: 3}",
              f"data.sources=[{{source: phantom, path: {phantom_dir}}}]", "runtime.device=cpu",
              f"runtime.strategy={strategy}", "objective.kwargs.koleo_weight=0", "objective.kwargs.ibot_weight=0",
              "objective.kwargs.n_local=2", "objective.kwargs.local_size=16", "objective.kwargs.n_prototypes=32",
              "objective.kwargs.freeze_last_layer_steps=0", "objective.kwargs.ibot_separate_head=true",
              "checkpoint={every: 3, keep_last: 1}"]
    single = pretrain(TrainConfig.from_file(Path(__file__).parents[2] / "configs" / "dinov2.yaml",
                                            [*common, f"out={tmp_path / 'one'}"]), progress=False)
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'two'}"], "dinov2"))
    one = load_file(str(single / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"dinov2, 2 ranks vs 1 rank after 3 {strategy} steps: max |teacher weight difference| {worst:.2e}")
    assert one.keys() == two.keys() and worst < 1e-4, worst
    states = [load_state(latest_state(tmp_path / run))["objective"] for run in ("one", "two")]
    centers = [k for k in states[0] if k.endswith("dino_loss.center")]
    assert centers and all(torch.allclose(states[0][k], states[1][k], atol=1e-4) for k in centers)
    assert float(states[0][centers[0]].abs().sum()) > 0
    heads = [load_file(str(tmp_path / run / "checkpoint" / HEAD_FILE)) for run in ("one", "two")]
    assert heads[0].keys() == heads[1].keys() and any(k.startswith("dino_head.") for k in heads[0])
    assert all(torch.allclose(heads[0][k], heads[1][k], atol=1e-4) for k in heads[0])
    assert all(torch.equal(heads[1][k], states[1][f"teacher.{k}"]) for k in heads[1])  # gathered from the shards
    monitors = [[(r["teacher_usage_entropy"], r["feature_rank"]) for r in logged(tmp_path / run)]
                for run in ("one", "two")]  # over the global batch, not each rank's half
    assert monitors[0] and np.allclose(monitors[0], monitors[1], rtol=1e-3), monitors


@pytest.mark.parametrize("config", ["clip", "gloria"])
def test_image_text_objectives_two_ranks_match_one_rank(tmp_path: Path, phantom_dir: Path, config: str) -> None:
    """Reports tokenised in the loader, the rank-0 vocabulary, and the global-batch losses under DDP: 3 steps on 2
    ranks give one process's weights (text-tower dropout off, so both draw the same network)."""
    from radlab.train.config import TrainConfig
    from radlab.train.engine import pretrain

    common = ["optim.steps=3", "optim.batch_size=8", "optim.warmup_steps=1", "model.image_size=32",
              "model.image_tower.kwargs={depth: 1}", "data.vocab_size=300",
              "model.text_tower.kwargs={hidden_size: 32, layers: 1, heads: 2, max_length: 32, dropout: 0.0}",
              f"data.sources=[{{source: phantom, path: {phantom_dir}}}]", "runtime.device=cpu",
              "checkpoint={every: 3, keep_last: 1}"]
    single = pretrain(TrainConfig.from_file(Path(__file__).parents[2] / "configs" / f"{config}.yaml",
                                            [*common, f"out={tmp_path / 'one'}"]), progress=False)
    start_ranks(_engine_worker, (2, free_port(), [*common, f"out={tmp_path / 'two'}"], config))
    one = load_file(str(single / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert one.keys() == two.keys() and any(k.startswith("text_tower.") for k in one)
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"{config}, 2 ranks vs 1 rank after 3 steps: max |weight difference| {worst:.2e}")
    assert worst < 1e-4, worst
    objectives = [load_file(str(tmp_path / run / "checkpoint" / "objective.safetensors")) for run in ("one", "two")]
    assert all(torch.allclose(objectives[0][k], objectives[1][k], atol=1e-4) for k in objectives[0])


def test_batch_norm_is_synchronised_across_gpus_only() -> None:
    from radlab.objectives.simclr import SimCLRObjective
    from radlab.train.distributed import DistEnv, sync_batch_norm

    def batch_norms(env: DistEnv) -> set[type]:
        module = sync_batch_norm(SimCLRObjective(image_dim=16, proj_dim=4, hidden_dim=8), env)
        return {type(m) for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    assert batch_norms(DistEnv(0, 2, 0, torch.device("cpu"))) == {torch.nn.BatchNorm1d}  # gloo: per-rank BN
    assert batch_norms(DistEnv(0, 2, 0, torch.device("cuda"))) == {torch.nn.SyncBatchNorm}  # no GPU needed
    assert batch_norms(DistEnv(0, 1, 0, torch.device("cuda"))) == {torch.nn.BatchNorm1d}


def _slow_main_worker(rank: int, world: int, port: int, out: str) -> None:
    """The process group times out after 2 s; rank 0 works 4 s alone (a long image-cache build) before the others
    may go on."""
    import time
    from datetime import timedelta

    from radlab.train.distributed import from_main, wait_for_main

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=2))
    if rank == 0:
        time.sleep(4)
    wait_for_main()
    decided = from_main(Path(out) / "state_00000004.pt" if rank == 0 else None)
    (Path(out) / f"rank{rank}.txt").write_text(str(decided))
    dist.destroy_process_group()


def test_ranks_wait_out_the_main_ranks_setup_and_act_on_its_decision(tmp_path: Path) -> None:
    start_ranks(_slow_main_worker, (2, free_port(), str(tmp_path)))
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == [str(tmp_path / "state_00000004.pt")] * 2
