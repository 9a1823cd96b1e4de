"""Continued DINOv2 pre-training from a Hugging Face-layout checkpoint (DINOv2, RAD-DINO) and its heads.

A checkpoint folder is what ``transformers`` writes for a ``Dinov2Model`` (``config.json`` +
``model.safetensors``), as RAD-DINO ships; the backbone is loaded as a radlab image tower through
``radlab.models.load_encoder("rad-dino:DIR")`` (or ``"hf-vision:DIR"``).

Starting DINO from a pretrained backbone with freshly initialised heads is a known cause of collapse, so the
DINO/iBOT heads are loaded too: from ``dino_head.safetensors`` (``HEAD_FILE``) in the folder, or from a head
file named directly, either safetensors or an official DINOv2 training checkpoint (``.pth``: ``{"model":
{"teacher.dino_head.*", ...}}`` as the training loop saves it, or ``teacher_checkpoint.pth`` = ``{"teacher":
{"dino_head.*", "ibot_head.*", "backbone.*"}}``), read with ``torch.load(weights_only=True)`` only; a file
that needs full unpickling is refused. Tensors are named as DINOv2's ``DINOHead`` names them:

    dino_head.mlp.{0,2,4}.weight / .bias     Linear layers of the MLP (GELU between)
    dino_head.mlp.weight / .bias             the MLP when it is a single Linear layer (nlayers=1)
    dino_head.mlp.{1,4}.*                    BatchNorm1d after each hidden Linear (use_bn; Linears at 0,3,6)
    dino_head.last_layer.weight_g            [K, 1]   weight-norm magnitude of the prototype layer
    dino_head.last_layer.weight_v            [K, d]   weight-norm direction (K prototypes, bottleneck d)
    ibot_head.*                              the same, when iBOT has a separate head

with a ``student.``/``teacher.`` prefix in training checkpoints: ``load_head_state`` keeps ``teacher.``
(preferred) or ``student.`` tensors and strips the prefix. It renames a single-Linear MLP to ``mlp.0.*``
(radlab's ``DINOHead`` layout), allows heads without MLP biases (mlp_bias=False), and accepts the prototype
layer as ``torch.nn.utils.parametrizations.weight_norm`` names it (``last_layer.parametrizations.weight.
original0``/``original1`` = g/v) and as a plain ``last_layer.weight`` (no weight norm), which becomes weight_v
with its row norms as weight_g, so the layer computes the same product. ``head_shape`` reads the ``DINOHead``
arguments back from the tensors.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from radlab.models.checkpoint import strip_prefix

HEAD_FILE = "dino_head.safetensors"
HEAD_NAMES = ("dino_head", "ibot_head")
_PARAMETRIZED = {"last_layer.parametrizations.weight.original0": "last_layer.weight_g",
                 "last_layer.parametrizations.weight.original1": "last_layer.weight_v"}
_SINGLE_LINEAR = {"mlp.weight": "mlp.0.weight", "mlp.bias": "mlp.0.bias"}


def head_file(path: str | Path) -> Path | None:
    """The head file of a checkpoint folder (or the file itself); None when the folder has none."""
    path = Path(path)
    candidate = path / HEAD_FILE if path.is_dir() else path
    return candidate if candidate.is_file() else None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a DINOv2 ``.pth`` checkpoint (``model``/``teacher`` unwrapped)."""
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{file} cannot be read with torch.load(weights_only=True) (it pickles more than "
                         f"tensors), and radlab does not unpickle outside files: save its head tensors as "
                         f"{HEAD_FILE} or a plain state dict") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{file} holds a {type(checkpoint).__name__}, not a state dict")
    for key in ("model", "teacher"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def load_head_state(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"dino_head": state, "ibot_head": state} (heads present only) from a head file or checkpoint folder,
    in radlab's ``DINOHead`` layout."""
    file = head_file(path)
    if file is None:
        raise FileNotFoundError(f"no head file at {path} (a folder with {HEAD_FILE}, or a .safetensors/.pth "
                                f"file)")
    flat = _read_tensors(file)
    for prefix in ("teacher.", "student."):
        if any(k.startswith(prefix) for k in flat):
            flat = strip_prefix(flat, prefix)
            break
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        name, _, rest = key.partition(".")
        if name in HEAD_NAMES:
            heads.setdefault(name, {})[rest] = value
    if "dino_head" not in heads:
        raise KeyError(f"{file} has no dino_head.* tensors (keys: {sorted(flat)[:5]} ...)")
    for name, state in heads.items():
        for old, new in (_PARAMETRIZED | _SINGLE_LINEAR).items():
            if old in state:
                state[new] = state.pop(old)
        if "last_layer.weight" in state and "last_layer.weight_v" not in state:
            weight = state.pop("last_layer.weight")
            state["last_layer.weight_v"] = weight
            state["last_layer.weight_g"] = weight.norm(dim=1, keepdim=True)
        try:
            head_shape(state)
        except ValueError as err:
            raise ValueError(f"{file}: {name} is not a DINOv2 DINOHead: {err}") from err
    return heads


def head_shape(state: dict[str, torch.Tensor]) -> dict[str, int | bool]:
    """The DINOHead arguments a state dict was made with: in_dim, hidden_dim, bottleneck_dim, n_prototypes,
    n_layers, use_bn, bias. Linear layers are the 2-D ``mlp.<i>.weight`` tensors (BatchNorm ones are 1-D)."""
    linears = sorted(int(k.split(".")[1]) for k, v in state.items()
                     if k.startswith("mlp.") and k.endswith(".weight") and v.ndim == 2)
    if not linears:
        raise ValueError("no 2-D mlp.<i>.weight tensors (Linear layers)")
    if "last_layer.weight_v" not in state:
        raise ValueError("no last_layer.weight_v (prototype layer)")
    use_bn = any(k.endswith(".running_mean") for k in state)
    step = 3 if use_bn else 2
    expected = list(range(0, step * len(linears), step))
    if linears != expected:
        raise ValueError(f"Linear layers at mlp indices {linears}, expected {expected} "
                         f"({'Linear, BatchNorm1d, GELU' if use_bn else 'Linear, GELU'} repeated)")
    first, last = state[f"mlp.{linears[0]}.weight"], state[f"mlp.{linears[-1]}.weight"]
    hidden = first.shape[0] if len(linears) > 1 else last.shape[0]
    return {"in_dim": first.shape[1], "hidden_dim": hidden, "bottleneck_dim": last.shape[0],
            "n_prototypes": state["last_layer.weight_v"].shape[0], "n_layers": len(linears), "use_bn": use_bn,
            "bias": f"mlp.{linears[0]}.bias" in state}


def save_head_state(path: str | Path, heads: dict[str, nn.Module]) -> Path:
    """Write heads (``{"dino_head": module, ...}``) as ``HEAD_FILE`` in a folder (or to a file path)."""
    path = Path(path)
    file = path / HEAD_FILE if path.suffix != ".safetensors" else path
    file.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{name}.{k}": v.detach().cpu().contiguous() for name, head in heads.items()
            for k, v in head.state_dict().items()}
    save_file(flat, str(file))
    return file
