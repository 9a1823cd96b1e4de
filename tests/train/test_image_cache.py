"""data.image_cache: pre-training reads its images from a pre-resized cache that rank 0 builds once and later
runs reuse, and trains as it does on the files (up to the cache's 1/255 rounding)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import tiny_config

from radlab.data import cache as cache_module
from radlab.data import dataset as dataset_module
from radlab.data.cache import ImageCache
from radlab.data.dataset import RecordDataset
from radlab.data.records import RecordTable
from radlab.models.towers import Preprocess
from radlab.train.distributed import DistEnv
from radlab.train.engine import pretrain
from radlab.train.setup import run_image_cache
from ranks import free_port, start_ranks
from run_logs import logged, loss_curve

STEPS = ("optim.steps=4", "optim.batch_size=8")


def test_a_run_builds_the_cache_and_the_next_one_reads_only_from_it(phantom16: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    files = tiny_config("supervised", phantom16, tmp_path / "files", *STEPS)
    pretrain(files, progress=False)
    cached = tiny_config("supervised", phantom16, tmp_path / "cached", *STEPS, f"data.image_cache={cache}")
    pretrain(cached, progress=False)
    built = ImageCache(cache)
    assert len(built) == len(RecordTable.read(phantom16)) and built.size == 32
    stamp = built.array_file.stat().st_mtime_ns

    def no_file_reads(path: object) -> None:
        raise AssertionError(f"an image file was read during training: {path}")

    monkeypatch.setattr(dataset_module, "read_image", no_file_reads)
    again = tiny_config("supervised", phantom16, tmp_path / "again", *STEPS, f"data.image_cache={cache}")
    pretrain(again, progress=False)
    assert built.array_file.stat().st_mtime_ns == stamp, "a matching cache is reused, not rebuilt"
    assert loss_curve(tmp_path / "again") == loss_curve(tmp_path / "cached")
    assert loss_curve(tmp_path / "cached") == pytest.approx(loss_curve(tmp_path / "files"), rel=1e-2)


def test_the_cache_refuses_what_it_cannot_serve(phantom16: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="cannot skip unreadable"):
        tiny_config("supervised", phantom16, tmp_path / "a", f"data.image_cache={cache}", "data.unreadable_images=skip")
    cfg = tiny_config("supervised", phantom16, tmp_path / "b", f"data.image_cache={cache}")
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="holds padded squares"):
        run_image_cache(cfg, env, [RecordTable.read(phantom16)], Preprocess(image_size=32, fit="crop"))
    assert not cache.exists(), "refused before any image is read"


def test_a_run_checks_each_cached_image_once(phantom16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0's build (or reuse) has checked every record against its file; the train and validation datasets
    read that same cache without checking the files again (a stat per image on a network disk each time)."""
    cfg = tiny_config("supervised", phantom16, tmp_path / "a", f"data.image_cache={tmp_path / 'cache'}")
    table = RecordTable.read(phantom16)
    first = table.frame["patient_id"].isin(table.frame["patient_id"].unique()[::2]).to_numpy()
    parts = [table.subset(first), table.subset(~first)]  # as train and val: other patients
    preprocess = Preprocess(image_size=32)
    cache = run_image_cache(cfg, DistEnv(0, 1, 0, torch.device("cpu")), parts, preprocess)
    for i in range(len(table)):  # touched after the check: a second check would hash each file again
        path = table.image_path(i)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))

    def hashed(path: Path) -> str:
        raise AssertionError(f"{path} was checked again")

    monkeypatch.setattr(cache_module, "content_hash", hashed)
    for part in parts:
        assert len(RecordDataset(part, preprocess, cache=cache)) == len(part)
    with pytest.raises(AssertionError, match="checked again"):
        ImageCache(tmp_path / "cache").validate(table)  # another process's view checks


def _cached_worker(rank: int, world: int, port: int, overrides: list[str]) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    pretrain(tiny_config("supervised", *overrides[:2], *overrides[2:]), progress=False)


def test_two_ranks_share_the_cache_rank_0_builds(phantom16: Path, tmp_path: Path) -> None:
    common = [*STEPS, f"data.image_cache={tmp_path / 'cache'}", "checkpoint={every: 4, keep_last: 1}"]
    one = pretrain(tiny_config("supervised", phantom16, tmp_path / "one", *common), progress=False)
    ImageCache(tmp_path / "cache").array_file.unlink()  # the two-rank run must build it again
    start_ranks(_cached_worker, (2, free_port(), [str(phantom16), str(tmp_path / "two"), *common]))
    assert len(ImageCache(tmp_path / "cache")) == len(RecordTable.read(phantom16))
    a, b = load_file(str(one / "model.safetensors")), load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_a_larger_source_size_is_cached_at_that_size_and_validated_at_the_towers(phantom_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """data.source_size: the cache holds the larger read; training views and the un-augmented validation
    images are the tower's size (a wrong size would fail in the tower), and the loss is measured."""
    cache = tmp_path / "cache"
    stopping = "early_stopping={metric: bce, every: 2, patience: 5, max_batches: 1}"
    cfg = tiny_config("supervised", phantom_dir, tmp_path / "run", *STEPS, f"data.image_cache={cache}",
                      "data.source_size=64", "data.split_fractions={train: 0.8, val: 0.2}", stopping)
    pretrain(cfg, progress=False)
    assert ImageCache(cache).size == 64
    assert any("val_bce" in record for record in logged(tmp_path / "run"))
    smaller = tiny_config("supervised", phantom_dir, tmp_path / "small", *STEPS, "data.source_size=16")
    with pytest.raises(ValueError, match="source_size .16. is smaller than the tower's image size .32."):
        pretrain(smaller, progress=False)
