"""Shared evaluation fixtures: split phantoms, one tiny CLIP-style encoder, a disk feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from radlab.data.records import RecordTable
from radlab.data.splits import DEFAULT_FRACTIONS, assign_splits
from radlab.models.build import ModelConfig, TowerConfig, build_encoder
from radlab.models.encoder import RadEncoder
from radlab.models.tokenizer import train_wordpiece

TINY = ModelConfig(image_size=64, embed_dim=32,
                   image_tower=TowerConfig(name="vit_tiny_patch16_224", kwargs={"patch_size": 8, "depth": 2}),
                   text_tower=TowerConfig(name="bert_small", kwargs={"hidden_size": 64, "layers": 1, "heads": 2}))




@pytest.fixture(scope="session")
def split_table(phantom_table: RecordTable) -> RecordTable:
    return assign_splits(phantom_table, DEFAULT_FRACTIONS, seed=0)


@pytest.fixture(scope="session")
def tiny_encoder(split_table: RecordTable) -> RadEncoder:
    torch.manual_seed(0)
    return build_encoder(TINY, train_wordpiece(split_table.texts(), vocab_size=400)).eval()


@pytest.fixture(scope="session")
def tiny_model_config() -> ModelConfig:
    """The tiny encoder's model section, to build others like it (other data, other towers)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_tower_spec() -> dict:
    """How ``save_encoder`` records the tiny encoder's image tower."""
    return {"name": TINY.image_tower.name, "kwargs": TINY.image_tower.kwargs}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")
