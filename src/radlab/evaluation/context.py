"""What every evaluation task receives: one encoder, one record table with patient-level splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radlab.data.records import RecordTable
from radlab.evaluation.features import FeatureCache
from radlab.models.encoder import RadEncoder
from radlab.registry import Registry

TASKS: Registry = Registry("evaluation task")


@dataclass
class EvalContext:
    encoder: RadEncoder
    table: RecordTable
    label_names: list[str]
    seed: int = 0
    batch_size: int = 64
    features: FeatureCache = field(default_factory=FeatureCache)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.table.frame["split"] == split).to_numpy() & self.table.has_images())

    def image_features(self, split: str, kind: str = "pooled") -> np.ndarray:
        return self.features.get(self.encoder, self.table, self.rows(split), kind, self.batch_size)

    def labels(self, split: str) -> np.ndarray:
        return self.table.labels(self.label_names)[self.rows(split)]


def evaluable_labels(table: RecordTable, names: list[str]) -> list[str]:
    """Labels with both positives and negatives in the test split (others have no defined AUC)."""
    test = table.split("test")
    values = test.labels(names)
    return [n for k, n in enumerate(names) if (values[:, k] == 1).any() and (values[:, k] == 0).any()]
