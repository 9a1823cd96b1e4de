"""Test markers shared across test folders."""

from __future__ import annotations

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: this test checks the GPU path")
