"""Augmentations are functions of torch's RNG alone (the loader seeds it per sample), keep [0, 1] and size."""

from __future__ import annotations

import random

import numpy as np
import torch

from radlab.data.augment import MultiCrop, TwoViews


def _views(transform: object, image: torch.Tensor, torch_seed: int, other_seed: int) -> list[torch.Tensor]:
    random.seed(other_seed)
    np.random.seed(other_seed)
    torch.manual_seed(torch_seed)
    return transform(image)


def test_views_depend_on_the_torch_seed_only() -> None:
    image = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(0))
    for transform in (MultiCrop(32, 16, n_local=3), TwoViews(32)):
        first = _views(transform, image, torch_seed=1, other_seed=1)
        again = _views(transform, image, torch_seed=1, other_seed=2)
        other = _views(transform, image, torch_seed=2, other_seed=1)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
        assert all(v.min() >= 0 and v.max() <= 1 for v in first)
