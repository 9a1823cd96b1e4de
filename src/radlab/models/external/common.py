"""Helpers shared by the external-encoder loaders: safe checkpoint reading, channel handling, projections.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only. Files that pickle whole modules or
config objects (torchxrayvision's DenseNet weights, Lightning ``hyper_parameters``) are read by allow-listing
each foreign class *name* as an inert placeholder: no code from the file runs, and tensors are recovered
from the placeholders' stored attributes.
"""

from __future__ import annotations

import logging
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from radlab.models.towers import Preprocess, TowerOutput

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")


class Placeholder:
    """Stands in for a class a checkpoint names but radlab does not import; it only records its state."""

    radlab_global = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | None):
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["state"] = state

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state")
        if isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(name)


def _placeholder(name: str) -> tuple[type, str]:
    return type(f"Placeholder[{name}]", (Placeholder,), {"radlab_global": name}), name


def safe_load(path: str | Path, max_foreign: int = 512) -> Any:
    """``torch.load`` with ``weights_only=True``; foreign classes become inert ``Placeholder`` objects."""
    allowed: list[tuple[type, str]] = []
    for _ in range(max_foreign):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            match = _UNSUPPORTED.search(str(err))
            name = match.group(1) if match else ""
            name = name if "." in name else f"builtins.{name}"
            if match is None or any(name == known for _, known in allowed):
                raise
            allowed.append(_placeholder(name))
    raise RuntimeError(f"{path}: more than {max_foreign} foreign classes in the checkpoint")


def state_dict_of(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint object: a state dict, an ``nn.Module``, or a pickled module read
    as ``Placeholder`` objects (parameters and persistent buffers, with their dotted names)."""
    if isinstance(obj, nn.Module):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    if isinstance(obj, Placeholder):
        state = obj.__dict__.get("state")
        if not isinstance(state, dict) or "_modules" not in state:
            return {}
        out: dict[str, torch.Tensor] = {}
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if value is not None and name not in skip:
                    out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                out.update(state_dict_of(child, f"{prefix}{name}."))
        return out
    if isinstance(obj, Mapping):
        return {prefix + str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise TypeError(f"cannot read a state dict from {type(obj).__name__}")


def load_state_dict_file(path: str | Path, *keys: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pt/.bin/.ckpt file; the first of ``keys`` present (e.g.
    "state_dict", "model") is unwrapped first."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = safe_load(path)
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj:
                obj = obj[key]
                break
    return state_dict_of(obj)


def find_file(root: Path, names: Sequence[str], patterns: Sequence[str] = ()) -> Path:
    """``root`` itself when it is a file, else the first of ``names`` (or glob ``patterns``) inside it."""
    if root.is_file():
        return root
    for name in names:
        if (root / name).is_file():
            return root / name
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError(f"{root}: none of {list(names) + list(patterns)} found")


class ChannelAdapter(nn.Module):
    """Turns radlab's input (normalised with scalar ``input_mean``/``input_std``, 1 or 3 identical
    channels) into what an RGB-stem model was trained on: three channels, each normalised with that model's
    own per-channel mean/std. Exact (an affine map per channel); an identity when the statistics agree."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_mean: float | None = None,
                 input_std: float | None = None) -> None:
        super().__init__()
        mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        self.mean, self.std = [float(m) for m in mean], [float(v) for v in std]
        self.input_mean = sum(self.mean) / len(self.mean) if input_mean is None else float(input_mean)
        self.input_std = sum(self.std) / len(self.std) if input_std is None else float(input_std)
        self.register_buffer("scale", (self.input_std / std_t).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((self.input_mean - mean_t) / std_t).view(1, -1, 1, 1), persistent=False)
        self.channels = len(mean_t)
        self.identity = bool(torch.allclose(self.scale, torch.ones(()), rtol=0, atol=1e-7)
                             and torch.allclose(self.shift, torch.zeros(()), rtol=0, atol=1e-7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x[:, :1].expand(-1, self.channels, -1, -1)
        return x if self.identity else x * self.scale + self.shift

    def preprocess(self, image_size: int, fit: str = "pad", resize: int | None = None) -> Preprocess:
        """The radlab ``Preprocess`` whose output this adapter expects (3 identical channels), in the
        model's reference geometry."""
        return Preprocess(image_size=image_size, mean=self.input_mean, std=self.input_std, channels=self.channels,
                          fit=fit, resize=resize)


class MatrixProjection(nn.Module):
    """``x @ weight`` with a stored [in, out] matrix (CLIP's ``proj`` / ``text_projection`` parameters)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def feature_map_output(features: torch.Tensor, pooled: torch.Tensor) -> TowerOutput:
    """TowerOutput from a CNN feature map [B, C, H, W] and its pooled vector."""
    h, w = features.shape[-2:]
    return TowerOutput(pooled, features.flatten(2).transpose(1, 2), grid=(h, w))


_CONSTANT_BUFFERS = (re.compile(r"embeddings\.position_ids$"), re.compile(r"relative_position_index$"))


def hf_model_from_state_dict(config: PretrainedConfig, state: Mapping[str, torch.Tensor],
                             **model_kwargs: Any) -> nn.Module:
    """A transformers ``AutoModel`` for ``config`` holding ``state``, loaded the way ``from_pretrained``
    loads a checkpoint (so older key names are converted), then checked strictly: every key must be
    consumed and every weight present. Constant index buffers of older versions are dropped first."""
    state = {k: v.detach().clone().contiguous() for k, v in state.items()
             if not any(p.search(k) for p in _CONSTANT_BUFFERS)}
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file(state, str(Path(tmp) / "model.safetensors"))
        model, info = AutoModel.from_pretrained(tmp, output_loading_info=True, dtype=torch.float32, **model_kwargs)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"{type(model).__name__} weights do not match the checkpoint: {problems}")
    return model.eval()


def bert_config_from_state_dict(state: Mapping[str, torch.Tensor]) -> BertConfig:
    """A BertConfig from the tensor shapes (heads = hidden / 64, the BERT convention, never stored)."""
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = {k.split(".")[2] for k in state if k.startswith("encoder.layer.")}
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers),
                      num_attention_heads=max(1, hidden // 64),
                      intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
                      max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
                      type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0])


def bert_from_state_dict(state: Mapping[str, torch.Tensor], config_dir: str | None = None) -> nn.Module:
    """A BertModel with ``state``; its config from ``config_dir`` when given, else from the shapes."""
    config = AutoConfig.from_pretrained(config_dir) if config_dir else bert_config_from_state_dict(state)
    return hf_model_from_state_dict(config, state, add_pooling_layer="pooler.dense.weight" in state)


def text_dir(root: Path, names: Sequence[str] = ("text",)) -> Path | None:
    """A local Hugging Face text folder under ``root`` (a config.json or tokenizer files), for offline use."""
    for name in names:
        folder = root / name
        if any((folder / f).is_file() for f in ("config.json", *TOKENIZER_FILES)):
            return folder
    return None


def config_dir(folder: Path | None) -> str | None:
    """``folder`` when it holds a model config.json."""
    return str(folder) if folder is not None and (folder / "config.json").is_file() else None


def load_tokenizer(candidates: Sequence[str | Path | None]) -> PreTrainedTokenizerBase | None:
    """The first tokenizer that loads from the candidates: local folders, or hub ids already in the Hugging
    Face cache (never downloaded here); None when none does."""
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return AutoTokenizer.from_pretrained(str(candidate), local_files_only=True)
        except (OSError, ValueError) as err:  # a folder that is there but does not load deserves a warning
            (log.warning if Path(candidate).is_dir() else log.info)("no tokenizer from %s (%s)", candidate, err)
    return None
