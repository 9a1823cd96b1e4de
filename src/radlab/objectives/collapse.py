"""A warning, once per run, when self-distillation targets stay collapsed (DINO, iBOT).

Caron et al. (2021, "Emerging Properties in Self-Supervised Vision Transformers", §5.3) name two collapses
of a centred, sharpened teacher: *uniform*, when centering wins and every target P is flat (mean per-sample
entropy H(P) -> log K), and *one-hot*, when sharpening wins and one prototype takes every image (entropy of
the batch-mean target H(mean P) -> 0). Either way the targets no longer tell images apart. ``CollapseWatch``
follows an exponential average of both monitors over about ``SPAN`` steps and, once ``AFTER`` of the run
has passed, warns when H(P) > ``UNIFORM`` log K or H(mean P) < ``ONE_HOT`` log K.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

SPAN, AFTER, UNIFORM, ONE_HOT = 50, 0.2, 0.9, 0.1


class CollapseWatch:
    """Averages the DINO teacher-target entropies and warns once when they show a collapse."""

    def __init__(self, n_prototypes: int) -> None:
        self.log_k = math.log(n_prototypes)
        self.averages: tuple[float, float] | None = None  # (H(P), H(mean P))
        self.warned = False

    def observe(self, entropy: float, usage: float) -> None:
        """One step's mean per-sample target entropy H(P) and batch-mean target entropy H(mean P), in nats."""
        if self.averages is None:
            self.averages = (entropy, usage)
            return
        mean_entropy, mean_usage = self.averages
        self.averages = (mean_entropy + (entropy - mean_entropy) / SPAN, mean_usage + (usage - mean_usage) / SPAN)

    def check(self, step: int, total_steps: int) -> str | None:
        """The warning issued at this step (logged once per run), else None."""
        if self.warned or self.averages is None or step < AFTER * total_steps:
            return None
        entropy, usage = self.averages
        if entropy > UNIFORM * self.log_k:
            kind, advice = "uniform", "centering outweighs sharpening: lower the teacher temperature"
            value = f"per-sample entropy {entropy:.2f}"
        elif usage < ONE_HOT * self.log_k:
            kind, advice = "one-hot", "sharpening outweighs centering: raise the teacher temperature"
            value = f"batch-mean entropy {usage:.2f}"
        else:
            return None
        self.warned = True
        message = (f"step {step}: DINO teacher targets show {kind} collapse ({value} nats, log K = "
                   f"{self.log_k:.2f}, averaged over ~{SPAN} steps); they no longer tell images apart. "
                   f"{advice}, or check that the augmented views of one image are closer than different images "
                   "are (docs/training.md, 'DINOv2 on a CPU budget')")
        log.warning(message)
        return message
