"""Augmentations are functions of torch's RNG alone (the loader seeds it per sample), keep [0, 1] and size."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from radlab.data.augment import MultiCrop, RandomBlur, TwoViews, radiograph_view


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


def _spread(image: torch.Tensor) -> float:
    """The variance along x of an image's intensity mass (sigma^2 for a blurred point)."""
    weights = image[0].sum(0) / image.sum()
    x = torch.arange(image.shape[-1], dtype=torch.float64)
    mean = (weights * x).sum()
    return float((weights * (x - mean) ** 2).sum())


def test_blur_reaches_its_largest_sigma_at_small_view_sizes() -> None:
    """A point blurred at sigma 2 spreads with variance 4 at a 64 px local view: the kernel is not cut short."""
    point = torch.zeros(1, 64, 64)
    point[0, 32, 32] = 1.0
    view = radiograph_view(64, (1.0, 1.0), ratio=(1.0, 1.0), blur_p=1.0, jitter=0.0, gamma=1.0)
    spreads = []
    for seed in range(100):
        torch.manual_seed(seed)
        spreads.append(_spread(view(point.clone())))
    assert 3.6 < max(spreads) <= 4.05
    assert min(spreads) < 0.2
    assert RandomBlur((2.0, 2.0))(point).sum() == pytest.approx(1.0, abs=1e-4)
    assert _spread(RandomBlur((2.0, 2.0))(point)) == pytest.approx(4.0, rel=0.02)
