"""What every image or text tower returns, and the preprocessing an image tower expects."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TowerOutput:
    """A tower's output: the pooled embedding [B, D] and its tokens [B, N, D] (patches, feature-map
    cells or word pieces). ``mask`` [B, N] marks real tokens (text padding is False); None means all real.
    ``grid`` is (rows, cols) of the patch tokens for image towers."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class Preprocess:
    """How images are fed to a tower: square size, channels, and intensity mean/std on [0, 1] pixels."""

    image_size: int = 128
    mean: float = 0.5
    std: float = 0.25
    channels: int = 1

    def normalise(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 1, H, W] in [0, 1] -> normalised [B, channels, H, W]."""
        x = (images01 - self.mean) / self.std
        return x.expand(-1, self.channels, -1, -1) if self.channels != x.shape[1] else x
