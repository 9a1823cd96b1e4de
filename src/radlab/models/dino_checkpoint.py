"""Continued DINOv2 pre-training from a Hugging Face-layout checkpoint (DINOv2, RAD-DINO) and its heads.

A checkpoint folder is what ``transformers`` writes for a ``Dinov2Model`` (``config.json`` +
``model.safetensors``), as RAD-DINO ships; the backbone is loaded as a radlab image tower through
``radlab.models.load_encoder("rad-dino:DIR")`` (or ``"hf:DIR"``), whichever external loader is registered.

Starting DINO from a pretrained backbone with freshly initialised heads is a known cause of collapse, so the
DINO/iBOT heads are loaded too when the folder has them, from ``dino_head.safetensors`` (``HEAD_FILE``):

    dino_head.mlp.{0,2,4}.weight / .bias     Linear layers of the MLP (GELU between; 1 layer: mlp.0 only)
    dino_head.last_layer.weight_g            [K, 1]   weight-norm magnitude of the prototype layer
    dino_head.last_layer.weight_v            [K, d]   weight-norm direction (K prototypes, bottleneck d)
    ibot_head.*                              the same, when iBOT has a separate head

These are the official DINOv2 training-checkpoint names with the ``student.``/``teacher.`` prefix removed;
``load_head_state`` strips ``teacher.`` (preferred) or ``student.`` prefixes. It also accepts the prototype
layer as ``torch.nn.utils.parametrizations.weight_norm`` names it (``last_layer.parametrizations.weight.
original0``/``original1`` = g/v) and as a plain ``last_layer.weight`` (no weight norm), which becomes weight_v
with its row norms as weight_g, so the layer computes the same product.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_FILE = "dino_head.safetensors"
HEAD_NAMES = ("dino_head", "ibot_head")
_PARAMETRIZED = {"last_layer.parametrizations.weight.original0": "last_layer.weight_g",
                 "last_layer.parametrizations.weight.original1": "last_layer.weight_v"}


def head_file(path: str | Path) -> Path | None:
    """The head file of a checkpoint folder (or the file itself); None when the folder has none."""
    path = Path(path)
    candidate = path / HEAD_FILE if path.is_dir() else path
    return candidate if candidate.is_file() else None


def load_head_state(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"dino_head": state, "ibot_head": state} (heads present only) from a head file or checkpoint folder."""
    file = head_file(path)
    if file is None:
        raise FileNotFoundError(f"no {HEAD_FILE} at {path}")
    flat = load_file(str(file))
    for prefix in ("teacher.", "student."):
        if any(k.startswith(prefix) for k in flat):
            flat = {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
            break
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        name, _, rest = key.partition(".")
        if name in HEAD_NAMES:
            heads.setdefault(name, {})[rest] = value
    if "dino_head" not in heads:
        raise KeyError(f"{file} has no dino_head.* tensors (keys: {sorted(flat)[:5]} ...)")
    for state in heads.values():
        for old, new in _PARAMETRIZED.items():
            if old in state:
                state[new] = state.pop(old)
        if "last_layer.weight" in state and "last_layer.weight_v" not in state:
            weight = state.pop("last_layer.weight")
            state["last_layer.weight_v"] = weight
            state["last_layer.weight_g"] = weight.norm(dim=1, keepdim=True)
    return heads


def head_shape(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The DINOHead arguments a state dict was made with: in_dim, hidden_dim, bottleneck_dim, n_prototypes,
    n_layers."""
    linears = sorted(int(k.split(".")[1]) for k in state if k.startswith("mlp.") and k.endswith(".weight"))
    if not linears:
        raise KeyError("head state has no mlp.*.weight")
    first, last = state[f"mlp.{linears[0]}.weight"], state[f"mlp.{linears[-1]}.weight"]
    hidden = first.shape[0] if len(linears) > 1 else last.shape[0]
    return {"in_dim": first.shape[1], "hidden_dim": hidden, "bottleneck_dim": last.shape[0],
            "n_prototypes": state["last_layer.weight_v"].shape[0], "n_layers": len(linears)}


def save_head_state(path: str | Path, heads: dict[str, nn.Module]) -> Path:
    """Write heads (``{"dino_head": module, ...}``) as ``HEAD_FILE`` in a folder (or to a file path)."""
    path = Path(path)
    file = path / HEAD_FILE if path.suffix != ".safetensors" else path
    file.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{name}.{k}": v.detach().cpu().contiguous() for name, head in heads.items()
            for k, v in head.state_dict().items()}
    save_file(flat, str(file))
    return file
