"""A warning, once per run, when self-distillation targets stay collapsed (DINO, iBOT).

Caron et al. (2021, "Emerging Properties in Self-Supervised Vision Transformers", §5.3) name two collapses
of a centred, sharpened teacher: *uniform*, when centering wins and every target P is flat (mean per-sample
entropy H(P) -> log K), and *one-hot*, when sharpening wins and one prototype takes every image (entropy of
the batch-mean target H(mean P) -> 0). Either way the targets no longer tell images apart. ``CollapseWatch``
follows an exponential average of both monitors over about ``span`` steps and, once ``after`` of the run
has passed, warns when H(P) > ``uniform`` log K or H(mean P) < ``one_hot`` log K.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


class CollapseWatch:
    """Averages the teacher-target entropies and warns once when they show a collapse."""

    def __init__(self, n_prototypes: int, span: int = 50, after: float = 0.2, uniform: float = 0.9,
                 one_hot: float = 0.1, name: str = "DINO") -> None:
        self.log_k, self.decay, self.after = math.log(n_prototypes), 1 - 1 / span, after
        self.bounds, self.name = (uniform, one_hot), name
        self.entropy: float | None = None
        self.usage: float | None = None
        self.warned = False

    def observe(self, entropy: float, usage: float) -> None:
        """One step's mean per-sample target entropy H(P) and batch-mean target entropy H(mean P), in nats."""
        if self.entropy is None or self.usage is None:
            self.entropy, self.usage = entropy, usage
            return
        self.entropy = self.decay * self.entropy + (1 - self.decay) * entropy
        self.usage = self.decay * self.usage + (1 - self.decay) * usage

    def check(self, step: int, total_steps: int) -> str | None:
        """The warning issued at this step (logged once per run), else None."""
        if self.warned or self.entropy is None or self.usage is None or step < self.after * total_steps:
            return None
        uniform, one_hot = self.bounds
        if self.entropy > uniform * self.log_k:
            kind, advice = "uniform", "centering outweighs sharpening: lower the teacher temperature"
            value = f"per-sample entropy {self.entropy:.2f}"
        elif self.usage < one_hot * self.log_k:
            kind, advice = "one-hot", "sharpening outweighs centering: raise the teacher temperature"
            value = f"batch-mean entropy {self.usage:.2f}"
        else:
            return None
        self.warned = True
        message = (f"step {step}: {self.name} teacher targets show {kind} collapse ({value} nats, log K = "
                   f"{self.log_k:.2f}, averaged over ~{round(1 / (1 - self.decay))} steps); they no longer tell "
                   f"images apart. {advice}, or check that the augmented views of one image are closer than "
                   "different images are (docs/training.md, 'DINOv2 on a CPU budget')")
        log.warning(message)
        return message
