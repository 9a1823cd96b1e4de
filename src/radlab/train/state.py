"""Training-state checkpoints for ``--resume``: ``<out>/state/step_XXXXXXXX.pt`` written atomically (temp
file + rename), the last K kept.

A state holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: nothing is unpickled. RNG states are stored as tensors.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from radlab import atomic

STATE_DIR = "state"
_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def cpu_copy(tree: object) -> object:
    """A detached CPU copy of the tensors in nested dicts/lists (other leaves are kept as they are)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: cpu_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [cpu_copy(v) for v in tree]
    return tree


def state_paths(out: Path | str) -> list[Path]:
    """Saved states of a run, oldest first."""
    folder = Path(out) / STATE_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PATTERN.match(p.name))


def latest_state(out: Path | str) -> Path | None:
    paths = state_paths(out)
    return paths[-1] if paths else None


def save_state(out: Path | str, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` for ``step`` atomically, then delete all but the newest ``keep_last`` states."""
    folder = Path(out) / STATE_DIR
    path = folder / f"step_{step:08d}.pt"
    with atomic.writing(path, durable=True) as handle:
        torch.save(state, handle)
    for old in state_paths(out)[: -max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def clear_states(out: Path | str) -> int:
    """Remove the training states in ``out`` (a new run starting there: an earlier run's states would outrank
    its own and a later resume would load them); returns how many there were."""
    paths = state_paths(out)
    for path in paths:
        path.unlink()
    return len(paths)


def load_state(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and numbers."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():  # a CPU run on a GPU machine leaves CUDA (and its memory) alone
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].cpu().numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    torch.set_rng_state(state["torch"].cpu())  # a state loaded onto a GPU comes back to where the RNG lives
    if "cuda" in state and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# What a resumed run may change: where it writes, its budget and runtime, the data's paths, the loader's worker
# count (samples are seeded per sample, whatever the workers), where the image cache lies (whether there is
# one stays: it rounds pixels to 1/255), and where the starting checkpoint lies (``init_from``,
# ``model.external``): it is compared by what its files hold (``starting_files``), so a moved copy resumes and
# another checkpoint does not.
RESUME_FREE = {"name", "out", "resume", "max_minutes", "runtime", "checkpoint", "init_from"}
RESUME_FREE_PARTS = {"data": {"sources", "eval_sources", "image_cache"}, "optim": {"num_workers", "log_every"},
                     "model": {"external"}}
SMALL_FILE = 1 << 20  # hashed whole: configs, tokenizers, specs; larger files (weights) by name and size


def starting_files(spec: str) -> str:
    """What a starting checkpoint (a folder, a file, or ``FORMAT:PATH``) holds, as one digest: the names and
    sizes of its files and the bytes of the small ones. Its architecture, preprocessing, tokenizer and, for a
    radlab checkpoint, training config (which leakage checks follow) are in those; the weights themselves a
    resumed state replaces. A spec naming nothing on this machine is its own identity."""
    path = Path(spec)
    if not path.exists():
        prefix, sep, rest = spec.partition(":")
        if not (sep and Path(rest).exists()):
            return spec
        return f"{prefix}:{starting_files(rest)}"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        name = file.relative_to(path) if path.is_dir() else ""  # a single file may be renamed
        digest.update(f"{name}\0{size}\0".encode())
        if size <= SMALL_FILE:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def run_fingerprint(cfg: BaseModel) -> dict[str, Any]:
    """The config fields a resumed run must share with the run it continues: all but those above (a changed
    batch, schedule, seed, model or objective would silently misread the state)."""
    full = cfg.model_dump(mode="json")
    dumped = {k: v for k, v in full.items() if k not in RESUME_FREE}
    for part, free in RESUME_FREE_PARTS.items():
        dumped[part] = {k: v for k, v in full.get(part, {}).items() if k not in free}
    dumped["data"]["cached"] = full.get("data", {}).get("image_cache") is not None
    starts = {"init_from": full.get("init_from"), "model.external": full.get("model", {}).get("external")}
    dumped["starting_files"] = {k: starting_files(v) if v else None for k, v in starts.items()}
    return dumped


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON defaults of a config model's fields, nested through sub-models (required ones included, for their
    own fields): what a field added to the config after a state was saved held, in effect, in that run."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            out[name] = default.model_dump(mode="json") if isinstance(default, BaseModel) else default
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = field_defaults(field.annotation)
    return out


def changed_fields(saved: dict[str, Any] | None, current: dict[str, Any], prefix: str = "",
                   defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted names of the fields that differ between two fingerprints; [] when a state holds none (older).
    A field the saved state lacks was added to the config after it was saved: the current value is compared
    with the field's default (``defaults``, from ``field_defaults``), which the older run used in effect; a field
    without a known default, or made free to change since, is not compared (an older state resumes as before)."""
    if saved is None:
        return []
    defaults = defaults or {}
    changed = []
    for key in sorted(current):
        b = current[key]
        if key not in saved:
            if key in defaults and not isinstance(defaults[key], dict) and b != defaults[key]:
                changed.append(prefix + key)
            continue
        a = saved[key]
        if isinstance(a, dict) and isinstance(b, dict):
            below = defaults.get(key)
            changed += changed_fields(a, b, f"{prefix}{key}.", below if isinstance(below, dict) else None)
        elif a != b:
            changed.append(prefix + key)
    return changed
