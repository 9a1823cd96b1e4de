"""The objective contract: ``forward(model, batch) -> dict`` of named loss terms, with the total in "loss"."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from radlab.registry import Registry

OBJECTIVES: Registry = Registry("objective")


def step_seed() -> int:
    """A seed for one step's random choices: one draw from torch's global RNG, which training states save and
    restore (and which each rank seeds differently)."""
    return int(torch.randint(0, 2**31 - 1, (1,)))


class Objective(nn.Module):
    """Base class. Subclasses declare what a batch must carry and may own learnable parameters
    (temperatures, class prototypes), which are trained and checkpointed with the model.

    A batch is a dict with "image" [B, C, H, W]; "labels" [B, K] (1/0/-1, NaN = not annotated) and
    "label_mask" [B, K] when ``requires_labels``; "tokens" (tokenizer output) and "has_text" [B] when
    ``requires_text``. Objectives that do not ``requires_images`` train on reports alone: their batches hold
    "index", "text", "has_text" and "tokens", one record per study with a report, images or not.
    """

    requires_images: bool = True
    requires_text: bool = False
    requires_labels: bool = False
    tower_only: bool = False  # trains the image tower (and its own heads), not the encoder's projections

    def forward(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def trains_without_reports(cls, option: Callable[[str], object]) -> str | None:
        """For a ``requires_text`` objective: the term that still trains when no record has a report, given
        ``option`` (an option's configured or default value), or None when it learns nothing without reports
        (the engine then refuses the run)."""
        return None

    def attach(self, model: nn.Module) -> None:
        """Give the encoder what evaluation needs from this objective (e.g. class prototypes)."""

    def checkpoint_files(self, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Safetensors files (name -> tensors) this objective adds to the final checkpoint folder, taken from
        its full ``state_dict`` (gathered when sharded): e.g. DINO heads, so a later run can start from them."""
        return {}

    def train_transform(self, image_size: int) -> Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]] | None:
        """Objective-specific augmentation of a [1, H, W] image in [0, 1]; None keeps the engine's default.
        Returning a list of views (multi-crop) makes ``batch["image"]`` a list of stacked views."""
        return None

    def unused_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Encoder parameters this objective never touches; the engine freezes them, so DDP finds no unused
        parameters. ``tower_only`` objectives leave the image/text projections alone."""
        if not self.tower_only:
            return []
        return [p for name in ("image_proj", "text_proj") if getattr(model, name, None) is not None
                for p in getattr(model, name).parameters()]

    def before_optimizer_step(self) -> None:
        """Called after the backward passes and gradient clipping, before the optimiser step (DINO drops its last
        layer's gradients there while that layer is frozen)."""

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA teachers, schedules of temperatures or momenta)."""

    def restart(self) -> None:
        """Called when a new run starts from this objective's saved state (``init_from``): what the state holds of
        the old run's progress rather than of learning (step counts, scheduled values, queues of its data) starts
        as at step 0; weights, teachers and centres are kept."""
