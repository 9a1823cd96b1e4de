"""Pre-training objectives: one ``nn.Module`` per method, registered by name in ``OBJECTIVES``."""

from radlab.objectives.base import OBJECTIVES, Objective
from radlab.registry import import_submodules

import_submodules(__name__)

__all__ = ["OBJECTIVES", "Objective"]
