import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from data import fixtures as fx
from radlab.cli import app
from radlab.data.cache import (
    ImageCache,
    StaleCache,
    build_cache,
    ensure_cache,
    read_webdataset,
    to_uint8,
    write_webdataset_shards,
)
from radlab.data.dataset import RecordDataset
from radlab.data.images import fit_square, read_image, resize_pad
from radlab.models.towers import Preprocess


@pytest.fixture()
def table(tmp_path):
    return fx.image_table(tmp_path / "images")


def test_cache_holds_each_preprocessed_image(table, tmp_path):
    cache = build_cache(table, tmp_path / "cache", size=32)
    assert cache.array.shape == (12, 32, 32) and cache.array.dtype == np.uint8
    for i, rid in enumerate(table.frame["id"]):
        np.testing.assert_array_equal(cache.get(rid), to_uint8(resize_pad(read_image(table.image_path(i)), 32)))
    assert cache.config.policy.startswith("png/jpeg") and "MONOCHROME1" in cache.config.policy


def test_a_rebuild_for_other_records_never_changes_what_a_reader_sees(table, tmp_path):
    """Two runs sharing a cache folder: the second's rebuild leaves the first's mapped pixels as they were, and
    a reader that reopens the array (a new loader worker, each epoch) is told, not handed other images."""
    folder = tmp_path / "cache"
    first = ensure_cache(table, folder, size=32)
    mapped = ImageCache(folder)
    before = np.array(mapped.get("s0"))
    worker = pickle.loads(pickle.dumps(ImageCache(folder)))  # as a spawned worker receives it: not yet mapped
    other = fx.image_table(tmp_path / "other", n=6, prefix="t")
    rebuilt = ensure_cache(other, folder, size=32)
    assert rebuilt.key != first.key and [p.name for p in folder.glob("images*.npy")] == [rebuilt.array_file.name]
    np.testing.assert_array_equal(mapped.get("s0"), before)
    with pytest.raises(StaleCache, match="rebuilt for other records since this run opened it"):
        worker.get("s0")


def _slow_build(args: tuple) -> None:
    """A run that builds the shared cache slowly (a large table), so another run's build overlaps it."""
    import time

    from radlab.data import cache as cache_module

    table, folder, delay = args
    read = cache_module.read_image
    cache_module.read_image = lambda path: (time.sleep(0.02), read(path))[1]
    time.sleep(delay)
    ensure_cache(table, folder, size=32)


def test_runs_building_one_cache_folder_at_once_leave_a_cache_true_to_its_images(table, tmp_path):
    """Two runs that find the shared folder empty build in turn (the folder's lock): the cache left holds the
    records it says, each with its own image, never the other run's or a half-written array."""
    import multiprocessing

    folder = tmp_path / "cache"
    other = fx.image_table(tmp_path / "other", n=12, prefix="t")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_slow_build, [(table, folder, 0.0), (other, folder, 0.05)])
    cache = ImageCache(folder)
    built = table if cache.entries[0]["id"] == "s0" else other
    cache.validate(built, 32)
    for i, rid in enumerate(built.frame["id"]):
        np.testing.assert_array_equal(cache.get(rid), to_uint8(resize_pad(read_image(built.image_path(i)), 32)))


def test_config_or_source_changes_invalidate(table, tmp_path):
    folder = tmp_path / "cache"
    first = ensure_cache(table, folder, size=32)
    built = first.array_file.stat().st_mtime_ns
    again = ensure_cache(table, folder, size=32)
    assert again.key == first.key and again.array_file.stat().st_mtime_ns == built  # reused
    path = table.image_path(3)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    ImageCache(folder).validate(table)  # touched but same bytes: still valid
    with pytest.raises(StaleCache, match="built with"):
        ImageCache(folder).validate(table, size=48)
    fx.png(path, 255 - fx.blobs(7, 64))
    again.validate(table)  # this object found every record current already: one run validates once
    with pytest.raises(StaleCache, match="changed since caching"):
        again.validate(table, deep=True)
    with pytest.raises(StaleCache, match="changed since caching"):
        ImageCache(folder).validate(table)
    rebuilt = ensure_cache(table, folder, size=32)
    assert rebuilt.key != first.key
    np.testing.assert_array_equal(rebuilt.get("s3"), to_uint8(resize_pad(read_image(path), 32)))
    with pytest.raises(StaleCache, match="is not cached"):
        rebuilt.validate(fx.image_table(tmp_path / "other", n=2, prefix="x"))


def test_dataset_reads_from_cache_in_workers(table, tmp_path):
    cache = build_cache(table, tmp_path / "cache", size=32, workers=2)
    preprocess = Preprocess(image_size=32)
    raw, cached = RecordDataset(table, preprocess, ["cardiomegaly"]), RecordDataset(table, preprocess, ["cardiomegaly"],
                                                                                   cache=cache)
    assert torch.allclose(raw[5]["image"], cached[5]["image"], atol=1.0 / 255 / preprocess.std + 1e-6)
    batch = next(iter(DataLoader(cached, batch_size=12, num_workers=2)))
    assert batch["image"].shape == (12, 1, 32, 32)
    with pytest.raises(StaleCache):
        RecordDataset(table, Preprocess(image_size=64), cache=cache)
    with pytest.raises(ValueError, match="holds padded squares"):
        RecordDataset(table, Preprocess(image_size=32, fit="crop"), cache=cache)
    cropped = RecordDataset(table, Preprocess(image_size=24, mean=0.0, std=1.0, fit="crop", resize=32))
    np.testing.assert_allclose(cropped[5]["image"][0].numpy(),
                               fit_square(read_image(table.image_path(5)), 24, "crop", 32), atol=1e-6)


def test_webdataset_shards_round_trip(table, tmp_path):
    cache = build_cache(table, tmp_path / "cache", size=32)
    shards = write_webdataset_shards(table, cache, tmp_path / "shards", shard_size=5)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples = list(read_webdataset([str(s) for s in shards], ["cardiomegaly", "edema"]))
    assert [s["id"] for s in samples] == table.frame["id"].tolist()
    np.testing.assert_array_equal((samples[4]["image"][0].numpy() * 255).round(), cache.get("s4"))
    assert samples[1]["labels"][0] == 1 and torch.isnan(samples[1]["labels"][1]) and samples[3]["labels"][1] == 1
    again = write_webdataset_shards(table, cache, tmp_path / "shards", shard_size=100)  # same folder, fewer shards
    assert [s.name for s in again] == ["shard-000000.tar"] and sorted((tmp_path / "shards").glob("*.tar")) == again
    assert len(list(read_webdataset([str(s) for s in again], ["cardiomegaly"]))) == len(table)


def test_cache_command(table, tmp_path):
    table.write(tmp_path / "table")
    result = CliRunner().invoke(app, ["data", "cache", str(tmp_path / "table"), "--out", str(tmp_path / "c"),
                                      "--size", "24", "--workers", "0", "--shards", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert len(ImageCache(tmp_path / "c")) == 12 and (tmp_path / "w" / "shards.json").exists()
