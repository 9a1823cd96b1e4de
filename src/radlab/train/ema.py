"""An exponential moving average of a module's weights (Polyak averaging), kept outside the module."""

from __future__ import annotations

import torch
from torch import nn


class ModelEMA:
    """``shadow = decay * shadow + (1 - decay) * weight`` after each optimiser step, for every floating
    parameter and buffer; integer buffers are copied. ``warmup`` ramps the decay as
    ``min(decay, (1 + n) / (warmup + n))`` so early averages are not dominated by the random init."""

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: int = 0) -> None:
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        if self.warmup <= 0:
            return self.decay
        return min(self.decay, (1 + self.updates) / (self.warmup + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        for key, value in module.state_dict().items():
            shadow = self.shadow[key]
            if value.is_floating_point():
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(value)
        self.updates += 1

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
        self.updates = int(state["updates"])
