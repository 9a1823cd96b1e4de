"""Resuming the same run: validation at a saved step, accumulation at epoch ends, the logged schedule, the config
a resumed run must keep, its metrics file, and files readable as the umask allows."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from tiny_runs import interrupted_copy, tiny_config

from radlab.train.config import TrainConfig
from radlab.train.engine import pretrain
from radlab.train.loader import Position, RankedBatchSampler
from radlab.train.state import (
    SMALL_FILE,
    changed_fields,
    field_defaults,
    latest_state,
    load_state,
    run_fingerprint,
    starting_files,
)
from run_logs import logged

VALIDATED = ["optim.steps=4", "optim.batch_size=8", "data.split_fractions={train: 0.8, val: 0.2}",
             "checkpoint={every: 2, keep_last: 5}", "early_stopping={metric: loss, every: 2, patience: 5, max_batches: 1}"]


def test_a_state_holds_its_steps_validation_and_validation_draws_nothing(tmp_path: Path, phantom_dir: Path) -> None:
    """MAE draws its masks from the global RNG, in validation too: resumed at a validated step, the run goes on
    exactly as the straight one."""
    pretrain(tiny_config("mae", phantom_dir, tmp_path / "a", *VALIDATED), progress=False)
    assert load_state(tmp_path / "a" / "state" / "step_00000002.pt")["early_stopping"]["best_step"] == 2
    resumed = interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    pretrain(tiny_config("mae", phantom_dir, resumed, *VALIDATED, "resume=true"), progress=False)
    a, b = (load_state(latest_state(out))["model"] for out in (tmp_path / "a", resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accumulation_keeps_the_optimiser_batches_across_epochs() -> None:
    def optimiser_batches(sampler: RankedBatchSampler, per_step: int) -> list[list[tuple[int, int]]]:
        micro = []
        for epoch in range(3):
            sampler.position = Position(epoch, 0)
            micro += list(sampler)
        return [sum(micro[i:i + per_step], []) for i in range(0, len(micro), per_step)]

    whole = optimiser_batches(RankedBatchSampler(10, 4, seed=0), 1)
    assert optimiser_batches(RankedBatchSampler(10, 2, seed=0, accumulation=2), 2) == whole and len(whole) == 6


@pytest.mark.parametrize("layer_decay", [None, 0.5])
def test_each_logged_step_shows_the_learning_rate_it_trained_with(tmp_path: Path, phantom_dir: Path,
                                                                 layer_decay: float | None) -> None:
    """The scheduled rate, not that of a group scaled down by layer-wise decay (the embeddings' come first)."""
    cfg = tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=3", "optim.batch_size=8",
                      f"optim.layer_decay={'null' if layer_decay is None else layer_decay}")
    pretrain(cfg, progress=False)
    rates = [r["lr"] for r in logged(tmp_path)]
    assert rates[:2] == pytest.approx([cfg.optim.lr / 2, cfg.optim.lr]), "warm-up of 2: (s + 1) / 2 at step s"


def test_resume_refuses_a_changed_run_and_keeps_one_line_per_step(tmp_path: Path, phantom_dir: Path) -> None:
    extra = ["optim.steps=4", "optim.batch_size=8", "checkpoint={every: 2, keep_last: 5}"]
    pretrain(tiny_config("supervised", phantom_dir, tmp_path / "a", *extra), progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "state" / "step_00000004.pt").unlink()  # interrupted after logging steps 3 and 4
    with (tmp_path / "b" / "metrics.jsonl").open("a") as metrics:  # and while writing step 5's line
        metrics.write('{"step": 5, "lo' + "\0" * 8)
    with pytest.raises(ValueError, match=r"differs from that run's in \['optim.batch_size'\]"):
        pretrain(tiny_config("supervised", phantom_dir, tmp_path / "b", *extra, "optim.batch_size=4", "resume=true"),
                 progress=False)
    pretrain(tiny_config("supervised", phantom_dir, tmp_path / "b", *extra, "max_minutes=60", "resume=true"),
             progress=False)
    assert [r["step"] for r in logged(tmp_path / "b")] == [1, 2, 3, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "b" / "tb"))
    board.Reload()
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3, 4], "no point twice"


def test_states_and_checkpoints_are_as_readable_as_the_umask_says(tmp_path: Path, phantom_dir: Path) -> None:
    previous = os.umask(0o022)
    try:
        folder = pretrain(tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=1", "optim.batch_size=8",
                                      "checkpoint={every: 1, keep_last: 1}"), progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(latest_state(tmp_path).stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_a_resume_may_move_data_caches_and_change_workers_not_what_is_trained(tmp_path: Path, phantom_dir: Path) -> None:
    def fingerprint(*extra: str) -> dict:
        return run_fingerprint(tiny_config("supervised", phantom_dir, tmp_path, "optim.batch_size=8", *extra))

    base = fingerprint(f"data.image_cache={tmp_path / 'c1'}")
    moved = fingerprint(f"data.image_cache={tmp_path / 'c2'}", "optim.num_workers=3", "optim.log_every=1",
                        "runtime.device=cpu", f"data.sources=[{{source: phantom, path: {tmp_path / 'moved'}}}]", "max_minutes=5")
    assert changed_fields(base, moved) == []
    assert changed_fields(base, fingerprint()) == ["data.cached"]
    assert changed_fields(base, fingerprint(f"data.image_cache={tmp_path / 'c1'}", "optim.lr=0.5")) == ["optim.lr"]


def test_a_state_saved_before_fields_were_added_or_freed_still_resumes(tmp_path: Path, phantom_dir: Path) -> None:
    current = run_fingerprint(tiny_config("supervised", phantom_dir, tmp_path, "optim.batch_size=8"))
    older = {**current, "data": {k: v for k, v in current["data"].items() if k != "cached"},
             "optim": {**current["optim"], "num_workers": 4}}  # as a state of an earlier radlab recorded it
    assert changed_fields(older, current) == []
    assert changed_fields({**older, "seed": current["seed"] + 1}, current) == ["seed"]


def test_a_field_added_since_a_state_was_saved_resumes_only_at_its_default(tmp_path: Path, phantom_dir: Path) -> None:
    """A state saved before data.source_size existed read images at the tower's size: resuming it with the field
    at its default continues that run; with views cut from a larger read it would mix two pipelines: refused."""
    defaults = field_defaults(TrainConfig)
    assert defaults["data"]["source_size"] is None and defaults["optim"]["accumulation"] == 1

    def older(*extra: str) -> tuple[dict, dict]:
        current = run_fingerprint(tiny_config("supervised", phantom_dir, tmp_path, "optim.batch_size=8", *extra))
        return {**current, "data": {k: v for k, v in current["data"].items() if k != "source_size"}}, current

    saved, current = older()
    assert changed_fields(saved, current, defaults=defaults) == []
    saved, current = older("data.source_size=64")
    assert changed_fields(saved, current, defaults=defaults) == ["data.source_size"]


def test_a_resume_follows_its_starting_checkpoint_by_content_not_path(tmp_path: Path, phantom_dir: Path) -> None:
    """A run started from a checkpoint (init_from) resumes after that checkpoint moved, and continues exactly as
    the straight run; it refuses another checkpoint, or none, whose training a leakage check would then follow."""
    steps = ["optim.steps=4", "optim.batch_size=8", "checkpoint={every: 2, keep_last: 5}"]
    parent = pretrain(tiny_config("supervised", phantom_dir, tmp_path / "parent", "optim.steps=1",
                                  "optim.batch_size=8"), progress=False)
    pretrain(tiny_config("supervised", phantom_dir, tmp_path / "a", *steps, f"init_from={parent}"), progress=False)
    moved = tmp_path / "elsewhere" / "parent"
    shutil.copytree(parent, moved)
    shutil.rmtree(tmp_path / "parent")
    resumed = interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    pretrain(tiny_config("supervised", phantom_dir, resumed, *steps, f"init_from={moved}", "resume=true"),
             progress=False)
    a, b = (load_state(latest_state(out))["model"] for out in (tmp_path / "a", resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)

    other = pretrain(tiny_config("supervised", phantom_dir, tmp_path / "other", "optim.steps=1", "optim.batch_size=8",
                                 "seed=1"), progress=False)
    for start in [f"init_from={other}", "init_from=null"]:
        again = interrupted_copy(tmp_path / "a", tmp_path / f"again-{start[10:15]}", 2)
        with pytest.raises(ValueError, match=r"in \['starting_files.init_from'\]; a moved starting checkpoint"):
            pretrain(tiny_config("supervised", phantom_dir, again, *steps, start, "resume=true"), progress=False)


def test_an_external_start_is_fingerprinted_by_its_files(tmp_path: Path) -> None:
    """``model.external`` FORMAT:PATH: a copy elsewhere is the same start; a changed config or tokenizer file, or
    a weights file of another size, is not; a name with nothing on this machine stands for itself."""
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"\0" * (SMALL_FILE + 1))
    copy = shutil.copytree(folder, tmp_path / "b")
    assert starting_files(f"hf_vision:{folder}") == starting_files(f"hf_vision:{copy}")
    assert starting_files(f"hf_vision:{folder}").startswith("hf_vision:")
    (copy / "model.safetensors").write_bytes(b"\1" * (SMALL_FILE + 1))
    assert starting_files(str(folder)) == starting_files(str(copy)), "large files by name and size"
    (copy / "model.safetensors").write_bytes(b"\0" * (SMALL_FILE + 2))
    assert starting_files(str(folder)) != starting_files(str(copy))
    shutil.copy(folder / "model.safetensors", copy / "model.safetensors")
    (copy / "config.json").write_text('{"hidden_size": 9}')
    assert starting_files(str(folder)) != starting_files(str(copy))
    assert starting_files("hf_vision:microsoft/rad-dino") == "hf_vision:microsoft/rad-dino"
    renamed = tmp_path / "renamed.safetensors"
    shutil.copy(folder / "model.safetensors", renamed)
    assert starting_files(f"chexzero:{renamed}") == starting_files(f"chexzero:{folder / 'model.safetensors'}")


def test_a_new_run_in_an_earlier_runs_folder_resumes_only_its_own_states(tmp_path: Path, phantom_dir: Path) -> None:
    """An earlier run's states outranked the new run's (higher steps): each new state was pruned as written and
    a resume loaded the earlier run's weights. A new run now clears them."""
    every = ["optim.batch_size=8", "checkpoint={every: 2, keep_last: 2}"]
    pretrain(tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=4", *every), progress=False)
    assert [p.name for p in (tmp_path / "state").iterdir()] != []
    pretrain(tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=6", "max_minutes=0", *every),
             progress=False)
    assert latest_state(tmp_path).name == "step_00000001.pt", "stopped by its budget after one step"
    pretrain(tiny_config("supervised", phantom_dir, tmp_path, "optim.steps=6", *every, "resume=true"),
             progress=False)
    assert [r["step"] for r in logged(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_each_resumed_session_gets_the_whole_time_budget(tmp_path: Path, phantom_dir: Path) -> None:
    """max_minutes is a session's budget (a requeued job's): a run that trained for days before still trains."""
    steps = ["optim.steps=4", "optim.batch_size=8", "checkpoint={every: 2, keep_last: 5}"]
    pretrain(tiny_config("supervised", phantom_dir, tmp_path / "a", *steps), progress=False)
    resumed = interrupted_copy(tmp_path / "a", tmp_path / "b", 2)
    path = latest_state(resumed)
    state = load_state(path)
    state["elapsed"] = 3.0e5  # earlier sessions: 83 hours
    torch.save(state, path)
    pretrain(tiny_config("supervised", phantom_dir, resumed, *steps, "max_minutes=60", "resume=true"), progress=False)
    assert latest_state(resumed).name == "step_00000004.pt"


def test_a_run_early_stopping_ended_does_not_train_on_when_resumed(tmp_path: Path, phantom_dir: Path) -> None:
    stopping = ["optim.steps=8", "optim.batch_size=8", "data.split_fractions={train: 0.8, val: 0.2}",
                "checkpoint={every: 2, keep_last: 5}",
                "early_stopping={metric: loss, every: 2, patience: 1, min_delta: 1.0e9, restore_best: false}"]
    pretrain(tiny_config("supervised", phantom_dir, tmp_path, *stopping), progress=False)
    assert latest_state(tmp_path).name == "step_00000004.pt", "no improvement by 1e9 at step 4: stopped"
    pretrain(tiny_config("supervised", phantom_dir, tmp_path, *stopping, "resume=true"), progress=False)
    assert latest_state(tmp_path).name == "step_00000004.pt"
    assert json.loads((tmp_path / "checkpoint" / "encoder.json").read_text())["step"] == 4
