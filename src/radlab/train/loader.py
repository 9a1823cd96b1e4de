"""Resumable, rank-aware data loading with reproducible augmentation.

- ``RankedBatchSampler``: epoch e shuffles the dataset with a generator seeded by (seed, e); global batch b is
  ``perm[b*G:(b+1)*G]`` (G = micro-batch x world size) and rank r takes its r-th slice, so gathering over ranks
  in rank order rebuilds exactly the batch a single process would see. It starts at any (epoch, batch).
- ``SeededDataset``: sample i of epoch e is augmented under torch's RNG seeded by (seed, e, i), inside a forked
  RNG, so augmentation depends on neither worker count, rank, nor where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class SeededDataset(Dataset):
    """Indexed by (epoch, i); runs the wrapped ``__getitem__(i)`` under a torch RNG seeded by (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed would also reseed (or, in a loader worker, queue with a
            # captured stack) every CUDA generator, about 1 ms a sample, and leave the GPU's dropout reseeded
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, i))
            return self.dataset[i]


@dataclass
class Position:
    """Where the data stream stands: the epoch and the global samples consumed in it."""

    epoch: int = 0
    samples: int = 0


class RankedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's micro-batches of (epoch, index) keys from ``position`` on; drops the last partial
    optimiser batch (``accumulation`` global micro-batches) of each epoch, so accumulation leaves the stream of
    optimiser batches as one process with the whole batch would see it."""

    def __init__(self, n: int, micro_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, accumulation: int = 1) -> None:
        self.n, self.micro_batch, self.seed = n, micro_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.global_batch = micro_batch * world_size
        self.batches_per_epoch = n // (self.global_batch * accumulation) * accumulation
        self.position = Position()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.position.samples // self.global_batch

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(sample_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.position.epoch
        order = self.order(epoch)
        for b in range(self.position.samples // self.global_batch, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * self.micro_batch
            yield [(epoch, int(i)) for i in order[start: start + self.micro_batch]]


def stream(loader: torch.utils.data.DataLoader, sampler: RankedBatchSampler) -> Iterator[dict]:
    """Batches forever, epoch after epoch, advancing ``sampler.position`` as each batch is handed out."""
    while True:
        for batch in loader:
            sampler.position.samples += sampler.global_batch
            yield batch
        sampler.position = Position(sampler.position.epoch + 1, 0)
