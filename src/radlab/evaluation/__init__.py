"""Evaluation tasks, registered by name in ``TASKS``; each takes an ``EvalContext`` and returns metrics."""

from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped
from radlab.registry import import_submodules

import_submodules(__name__)

__all__ = ["TASKS", "EvalContext", "TaskSkipped"]
