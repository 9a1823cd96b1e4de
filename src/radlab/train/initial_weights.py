"""Starting a run from a radlab checkpoint (``init_from``): new data or a new objective on trained weights.

The encoder's weights (towers, projections) load strictly, except that a text tower the checkpoint lacks
starts fresh (labels first, then report text). The objective's state (learned temperatures, prototypes,
DINO heads and EMA teacher) loads when the checkpoint was trained with the same objective, its schedules and
queues restarted (``Objective.restart``: a new run's step 0); otherwise the objective starts fresh.
Optimiser, schedule and data position always start fresh: ``resume`` continues a run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from radlab.models.checkpoint import OBJECTIVE_FILE, TEXT_DIR, WEIGHTS_FILE, read_spec, upgrade_state
from radlab.objectives.base import Objective

log = logging.getLogger(__name__)
TEXT_KEYS = ("text_tower.", "text_proj.")


def checkpoint_tokenizer_dir(folder: Path | str) -> Path | None:
    """The checkpoint's text tokenizer, which a text tower continued from it must keep."""
    path = Path(folder) / TEXT_DIR
    return path if path.is_dir() else None


def load_encoder_weights(model: nn.Module, folder: Path | str) -> None:
    """Load the checkpoint's encoder weights into ``model`` (built from this run's config). Label heads and
    word-region matchers are skipped (while training, the objective owns them: ``load_objective_state``), and
    so is the text tower
    when this run's objective uses images only."""
    folder = Path(folder)
    spec = read_spec(folder)
    if spec.get("external"):
        raise ValueError(f"{folder} continued the public encoder {spec['external']!r}, whose architecture this "
                         f"run's model section does not build: start from it with model.external={folder}")
    skip = ("label_head.", "local_match.") + (TEXT_KEYS if model.text_tower is None else ())
    state = {k: v for k, v in upgrade_state(load_file(str(folder / WEIGHTS_FILE))).items() if not k.startswith(skip)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{folder / WEIGHTS_FILE} does not fit this run's model section: {error}") from error
    fresh_text = spec["text_tower"] is None
    missing = [k for k in missing if not (fresh_text and k.startswith(TEXT_KEYS))]
    if missing or unexpected:
        raise ValueError(f"{folder / WEIGHTS_FILE} does not fit this run's model section (keep the checkpoint's "
                         f"towers, embed_dim and projection): missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("init_from %s: encoder weights loaded%s", folder,
             "; the text tower starts fresh (the checkpoint has none)" if fresh_text and model.text_tower else "")


def load_objective_state(objective: Objective, name: str, folder: Path | str) -> bool:
    """Load the objective's saved state when the checkpoint was trained with objective ``name``; returns
    whether it did."""
    folder = Path(folder)
    trained = read_spec(folder).get("train_config", {}).get("objective", {}).get("name")
    path = folder / OBJECTIVE_FILE
    if trained != name or not path.is_file():
        log.info("init_from %s: objective %s starts fresh (the checkpoint was trained with %s)", folder, name,
                 trained or "an unknown objective")
        return False
    try:
        objective.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit this run's {name} objective (same classes and heads?): "
                         f"{error}") from error
    objective.restart()
    log.info("init_from %s: %s objective state loaded (its schedules and queues restart)", folder, name)
    return True
