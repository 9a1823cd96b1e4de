"""What every image or text tower returns, and the preprocessing an image tower expects."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TowerOutput:
    """A tower's output: the pooled embedding [B, D] and its tokens [B, N, D] (patches, feature-map
    cells or word pieces). ``mask`` [B, N] marks real tokens (text padding is False); None means all real.
    ``grid`` is (rows, cols) of the patch tokens for image towers. ``regions`` [B, R, D'] are the features
    word-region matching reads when they are not the tokens (GLoRIA's ResNet ``layer3`` cells)."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    regions: torch.Tensor | None = None

    def rows(self, index: slice | torch.Tensor) -> TowerOutput:
        """The output of some of the batch's images (or texts)."""
        return TowerOutput(self.pooled[index], self.tokens[index], None if self.mask is None else self.mask[index],
                           self.grid, None if self.regions is None else self.regions[index])


FITS = ("pad", "crop")


@dataclass(frozen=True)
class Preprocess:
    """How images are fed to a tower: square size, geometry, channels, and intensity mean/std on [0, 1] pixels.

    Geometry (``radlab.data.images.fit_square``): ``fit`` the radiograph to a ``resize`` square ("pad": longer
    side, zero padding, keeps the whole image; "crop": shorter side, centre crop, as most public image
    processors do), then centre-crop to ``image_size`` (``resize`` None = ``image_size``, no second crop).
    External encoders set what their reference preprocessing does (BioViL: crop 512 -> 480)."""

    image_size: int = 128
    mean: float = 0.5
    std: float = 0.25
    channels: int = 1
    fit: str = "pad"
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"Preprocess.fit must be one of {FITS}, got {self.fit!r}")
        if self.resize is not None and self.resize < self.image_size:
            raise ValueError(f"Preprocess.resize ({self.resize}) must be at least image_size ({self.image_size})")

    def geometry(self) -> str:
        """The geometry in words (model cards, logs)."""
        fitted = ("longer side resized and zero-padded to a square" if self.fit == "pad"
                  else "shorter side resized and centre-cropped to a square")
        side = self.resize or self.image_size
        crop = f", then centre-cropped to {self.image_size} px" if side != self.image_size else ""
        return f"{fitted} of {side} px{crop}"

    def normalise(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 1, H, W] in [0, 1] -> normalised [B, channels, H, W]."""
        x = (images01 - self.mean) / self.std
        return x.expand(-1, self.channels, -1, -1) if self.channels != x.shape[1] else x
