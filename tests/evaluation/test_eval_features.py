"""The disk feature cache: keyed by weights, record content and image files; reused across runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from radlab.data.records import RecordTable
from radlab.evaluation import features as features_module
from radlab.evaluation.features import FeatureCache, encoder_hash, table_hash
from radlab.models.encoder import RadEncoder


def _copy(split_table: RecordTable, root: Path, n: int = 3) -> RecordTable:
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        shutil.copy(split_table.image_path(i), root / "images" / f"{i}.png")
        records.append({"id": str(i), "image_path": f"images/{i}.png", "source": "t", "patient_id": str(i)})
    return RecordTable.from_records(records, root)


def test_cache_reuses_and_invalidates(split_table: RecordTable, tiny_encoder: RadEncoder, tmp_path: Path) -> None:
    table = _copy(split_table, tmp_path / "data")
    rows = np.arange(3)
    first = FeatureCache(tmp_path / "cache")
    features = first.get(tiny_encoder, table, rows, "pooled", 8)
    assert first.extractions == 1 and features.shape[0] == 3
    second = FeatureCache(tmp_path / "cache")
    assert np.array_equal(second.get(tiny_encoder, table, rows, "pooled", 8), features)
    assert second.extractions == 0
    second.get(tiny_encoder, table, rows, "embedding", 8)
    assert second.extractions == 1
    shutil.copy(split_table.image_path(5), tmp_path / "data" / "images" / "0.png")
    os.utime(tmp_path / "data" / "images" / "0.png", ns=(1, 1))
    third = FeatureCache(tmp_path / "cache")
    assert not np.array_equal(third.get(tiny_encoder, table, rows, "pooled", 8), features)
    assert third.extractions == 1


def test_hashes_follow_content(split_table: RecordTable, tiny_encoder: RadEncoder) -> None:
    assert encoder_hash(tiny_encoder) == encoder_hash(tiny_encoder)
    changed = split_table.subset(np.arange(len(split_table)))
    changed.frame.loc[0, "label_cardiomegaly"] = 1 - (changed.frame.loc[0, "label_cardiomegaly"] or 0)
    assert table_hash(changed) != table_hash(split_table)
    assert table_hash(split_table.subset(np.arange(len(split_table)))) == table_hash(split_table)


def test_loader_workers_extract_the_same_features_and_name_a_bad_file(split_table: RecordTable,
                                                                      tiny_encoder: RadEncoder, tmp_path: Path) -> None:
    table = _copy(split_table, tmp_path / "data", n=5)
    rows = np.arange(5)
    alone = FeatureCache().get(tiny_encoder, table, rows, "pooled", 2)
    assert np.array_equal(FeatureCache(workers=2).get(tiny_encoder, table, rows, "pooled", 2), alone)
    (tmp_path / "data" / "images" / "3.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"3\.png"):
        FeatureCache(workers=2).get(tiny_encoder, table, rows, "pooled", 2)
    with pytest.raises(ValueError, match="workers must be 0"):
        FeatureCache(workers=-1)


def test_features_cached_under_another_image_reading_policy_are_extracted_again(
        split_table: RecordTable, tiny_encoder: RadEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _copy(split_table, tmp_path / "data")
    FeatureCache(tmp_path / "cache").get(tiny_encoder, table, np.arange(3), "pooled", 8)
    monkeypatch.setattr(features_module, "INTENSITY_POLICY", "png/jpeg: read some other way")
    again = FeatureCache(tmp_path / "cache")
    again.get(tiny_encoder, table, np.arange(3), "pooled", 8)
    assert again.extractions == 1


def test_what_shapes_features_besides_weights_is_part_of_the_key(split_table: RecordTable, tiny_encoder: RadEncoder,
                                                                  tmp_path: Path) -> None:
    """Same weights, another text truncation: the text features are extracted again, not served from the disk."""
    import copy

    texts = [" ".join(split_table.texts()[:6])] * 2  # long enough for 8 tokens to cut it
    cached = FeatureCache(tmp_path / "cache").text(tiny_encoder, texts)
    short = copy.deepcopy(tiny_encoder)
    short.text_tower.max_length = 8
    assert encoder_hash(short) == encoder_hash(tiny_encoder)
    again = FeatureCache(tmp_path / "cache")
    assert not np.allclose(again.text(short, texts), cached) and again.extractions == 1


def test_weights_changed_in_place_are_not_served_their_old_features(split_table: RecordTable,
                                                                     tiny_encoder: RadEncoder, tmp_path: Path) -> None:
    import copy

    import torch

    table = _copy(split_table, tmp_path / "data")
    encoder, cache = copy.deepcopy(tiny_encoder), FeatureCache()
    before = cache.get(encoder, table, np.arange(3), "pooled", 8)
    with torch.no_grad():
        next(encoder.image_tower.parameters()).mul_(2.0)  # a fine-tuning step on the same object
    assert not np.array_equal(cache.get(encoder, table, np.arange(3), "pooled", 8), before)
    assert cache.extractions == 2


def test_an_unreadable_cached_file_is_extracted_again(split_table: RecordTable, tiny_encoder: RadEncoder,
                                                      tmp_path: Path) -> None:
    table = _copy(split_table, tmp_path / "data")
    features = FeatureCache(tmp_path / "cache").get(tiny_encoder, table, np.arange(3), "pooled", 8)
    (cached,) = (tmp_path / "cache").glob("*.npy")
    cached.write_bytes(cached.read_bytes()[:100])  # a writer killed mid-file, before atomic writes
    again = FeatureCache(tmp_path / "cache")
    assert np.array_equal(again.get(tiny_encoder, table, np.arange(3), "pooled", 8), features)
    assert again.extractions == 1 and np.load(cached).shape == features.shape
