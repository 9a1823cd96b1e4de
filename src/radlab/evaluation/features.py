"""Frozen image features, extracted once per (encoder, records, kind) and kept in memory."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from radlab.data.dataset import Collator, RecordDataset
from radlab.data.records import RecordTable
from radlab.models.encoder import RadEncoder

FEATURE_KINDS = ("pooled", "embedding")


@torch.no_grad()
def extract_features(encoder: RadEncoder, table: RecordTable, kind: str = "pooled",
                     batch_size: int = 64) -> np.ndarray:
    """``pooled``: tower features before projection (probes); ``embedding``: normalised joint embeddings."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
    encoder.eval()
    loader = DataLoader(RecordDataset(table, encoder.preprocess), batch_size=batch_size, collate_fn=Collator())
    device = next(encoder.parameters()).device
    chunks = []
    for batch in loader:
        images = batch["image"].to(device)
        out = encoder.image_features(images) if kind == "pooled" else encoder.encode_image(images)
        chunks.append(out.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


class FeatureCache:
    def __init__(self) -> None:
        self._store: dict[tuple, np.ndarray] = {}

    def get(self, encoder: RadEncoder, table: RecordTable, rows: np.ndarray, kind: str,
            batch_size: int) -> np.ndarray:
        key = (id(encoder), id(table), kind, rows.tobytes())
        if key not in self._store:
            self._store[key] = extract_features(encoder, table.subset(rows), kind, batch_size)
        return self._store[key]
