"""Augmentations for self-supervised pre-training on grayscale radiographs, and the multi-crop transform.

Radiographs have one channel, so the colour parts of the natural-image recipes (hue and saturation jitter,
random grayscale, solarisation) are dropped; what remains changes what a different exposure, detector or
reconstruction would change: brightness, contrast, gamma and sharpness. Crops keep a floor on area so a
global view still shows enough anatomy. Horizontal flips swap laterality (heart side, left/right findings);
they are off by default and a config may turn them on for SSL, where invariance to the flip is harmless.

Every transform takes and returns a [1, H, W] float image in [0, 1], and draws only from torch's RNG, which
the training loader seeds per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class RandomGamma(torch.nn.Module):
    """x -> x^gamma with log(gamma) uniform in [-log(g), log(g)]: a nonlinear window/exposure change."""

    def __init__(self, max_gamma: float = 1.4, p: float = 0.5) -> None:
        super().__init__()
        self.max_gamma, self.p = max_gamma, p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.max_gamma <= 1.0 or float(torch.rand(())) >= self.p:
            return image
        bound = torch.tensor(self.max_gamma).log().item()
        gamma = float(torch.empty(()).uniform_(-bound, bound).exp())
        return TF.adjust_gamma(image.clamp(0, 1), gamma)


class RandomBlur(torch.nn.Module):
    """Gaussian blur with sigma uniform in ``sigma`` (output pixels), as DINO's PIL blur: the kernel spans
    three sigmas each side of the drawn sigma, bounded by what reflection padding of the image allows. (DINOv2's
    torchvision blur has a fixed 9-pixel kernel, two sigmas each side at sigma 2; radlab's had been
    ``size // 16``, 5 pixels at 64 px local views, where sigma 2 acted as about 1.3.)"""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        sigma = float(torch.empty(()).uniform_(*self.sigma))
        kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * min(image.shape[-2:]) - 1)  # odd, as reflection allows
        return TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])


class Clamp01(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.clamp(0, 1)


def radiograph_view(size: int, scale: tuple[float, float], *, blur_p: float = 0.5, jitter: float = 0.4,
                    jitter_p: float = 0.8, gamma: float = 1.4, hflip: bool = False,
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> v2.Compose:
    """One random view: resized crop of ``scale`` of the area, optional flip, brightness/contrast jitter
    (probability ``jitter_p``), random gamma and Gaussian blur (probability ``blur_p``)."""
    steps: list[torch.nn.Module] = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if jitter > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=jitter, contrast=jitter)], p=jitter_p))
    steps.append(RandomGamma(gamma))
    if blur_p > 0:
        steps.append(v2.RandomApply([RandomBlur((0.1, 2.0))], p=blur_p))
    steps.append(Clamp01())
    return v2.Compose(steps)


@dataclass
class MultiCrop:
    """DINO/DINOv2 multi-crop (Caron et al., 2021): two global views at ``global_size`` and ``n_local``
    local views at ``local_size``. The first global view is always blurred a little more often than the
    second (probabilities 1.0/0.1 in DINOv2; 0.5/0.1 here, radiographs being smooth already) and local
    views with probability 0.5. ``ratio`` is the crops' aspect-ratio range: stretching changes anatomical
    proportions (heart-to-thorax width), which a narrow range keeps. Returns [global_1, global_2, local_1, ...,
    local_n]."""

    global_size: int
    local_size: int
    n_local: int = 6
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip: bool = False
    jitter: float = 0.4
    gamma: float = 1.4
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        common = dict(jitter=self.jitter, gamma=self.gamma, hflip=self.hflip, ratio=tuple(self.ratio))
        self.global_views = [radiograph_view(self.global_size, tuple(self.global_scale), blur_p=0.5, **common),
                             radiograph_view(self.global_size, tuple(self.global_scale), blur_p=0.1, **common)]
        self.local_view = radiograph_view(self.local_size, tuple(self.local_scale), blur_p=0.5, **common)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        views = [view(image) for view in self.global_views]
        return views + [self.local_view(image) for _ in range(self.n_local)]


@dataclass
class TwoViews:
    """Two independent random views of one image (SimCLR-style pairs)."""

    size: int
    scale: tuple[float, float] = (0.3, 1.0)
    hflip: bool = False
    jitter: float = 0.4
    gamma: float = 1.4
    blur_p: float = 0.5

    def __post_init__(self) -> None:
        self.view = radiograph_view(self.size, tuple(self.scale), blur_p=self.blur_p, jitter=self.jitter,
                                    gamma=self.gamma, hflip=self.hflip)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.view(image), self.view(image)]


@dataclass
class BaseAndTwoViews(TwoViews):
    """SLIP's views of one image (Mu et al., 2022): a "base" view for the image-text term, then the two
    self-supervision views of ``TwoViews``. The base view is a crop of ``base_scale`` of the area and nothing
    more, as SLIP's CLIP view: no intensity changes and never a flip, which would swap the laterality its
    report names; ``hflip`` applies to the two self-supervision views only."""

    base_scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base_view = radiograph_view(self.size, tuple(self.base_scale), blur_p=0.0, jitter=0.0, gamma=1.0)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.base_view(image), *super().__call__(image)]


def local_crop_size(image_size: int, patch: int) -> int:
    """DINOv2's local/global side ratio (98/224 = 0.4375) at ``image_size``, rounded to the nearest multiple of
    the tower's ``patch`` (a patch embedding drops the pixels past the last whole patch): 98 at 224 px with
    14 px patches, as DINOv2; 64 at 128 px with 16 px patches."""
    return max(patch, round(image_size * 0.4375 / patch) * patch)
