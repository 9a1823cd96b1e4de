"""radlab encoder checkpoints: a folder with ``encoder.json`` (how to rebuild), ``model.safetensors``
(weights), ``text_tower/`` (text config + tokenizer), for towers built from a Hugging Face folder
``image_tower/`` (its config), and from training runs ``objective.safetensors`` (the objective's state).
Nothing is unpickled when loading, and nothing outside the folder is read, with one exception: a run that
continued a public encoder (``model.external``) records its "FORMAT:PATH", and loading rebuilds the
architecture and tokenizer from there before every weight is replaced by the folder's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from radlab import __version__
from radlab.atomic import replace_folder, temp_folder
from radlab.models.encoder import LabelHead, RadEncoder
from radlab.models.image_towers import INITIAL_WEIGHTS, build_image_tower, takes_input_statistics
from radlab.models.local_matching import LocalMatcher
from radlab.models.text_towers import HFTextTower
from radlab.models.towers import Preprocess

SPEC_FILE = "encoder.json"
WEIGHTS_FILE = "model.safetensors"
OBJECTIVE_FILE = "objective.safetensors"  # the training objective's state, for ``init_from``
TEXT_DIR = "text_tower"
IMAGE_DIR = "image_tower"  # towers built from a folder (hf_vision): their config, so loading needs no other copy


def save_encoder(model: RadEncoder, directory: Path | str, image_tower_spec: dict, extra: dict | None = None,
                 weights: dict[str, torch.Tensor] | None = None,
                 files: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write the checkpoint folder atomically (a temp folder renamed into place).

    ``image_tower_spec`` is {"name": registry name, "kwargs": {...}} so the tower can be rebuilt (None when
    ``extra["external"]`` names the public encoder the towers come from); ``weights`` replaces
    ``model.state_dict()`` (a gathered state of a sharded model); ``files`` adds safetensors files by name (an
    objective's heads, ``Objective.checkpoint_files``)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(directory)
    if image_tower_spec is not None and takes_input_statistics(image_tower_spec["name"]):  # what it adapted from
        image_tower_spec = {**image_tower_spec, "kwargs": {"input_mean": model.preprocess.mean,
                                                           "input_std": model.preprocess.std,
                                                           **image_tower_spec.get("kwargs", {})}}
    spec = {
        "radlab_version": __version__,
        "image_tower": image_tower_spec,
        "embed_dim": model.embed_dim,
        "projection": model.projection_kind,
        "preprocess": vars(model.preprocess),
        "text_tower": None,
        "label_head": {"class_names": model.label_head.class_names} if model.label_head is not None else None,
        "seen_classes": model.seen_classes,
        "local_match": model.local_match.spec() if model.local_match is not None else None,
        **(extra or {}),
    }
    if hasattr(model.image_tower, "save_architecture"):
        model.image_tower.save_architecture(tmp / IMAGE_DIR)
    if model.text_tower is not None and spec.get("external"):
        spec["text_tower"] = {"from": "external"}
    elif model.text_tower is not None:
        spec["text_tower"] = model.text_tower.spec()
        model.text_tower.model.config.save_pretrained(tmp / TEXT_DIR)
        model.text_tower.tokenizer.save_pretrained(tmp / TEXT_DIR)
    for name, tensors in {WEIGHTS_FILE: weights or model.state_dict(), **(files or {})}.items():
        save_file({k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                   for k, v in tensors.items()}, str(tmp / name))  # contiguous, no shared storage
    (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    replace_folder(tmp, directory)
    return directory


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` with it removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of earlier radlab versions in today's layout: a 0-d label-head ``logit_scale`` becomes [1]
    (1-d so FSDP can shard it), and an unused BERT pooler head (radlab pools the hidden states) is dropped."""
    state = {k: v for k, v in state.items() if ".pooler." not in k}
    scale = state.get("label_head.logit_scale")
    if scale is not None and scale.ndim == 0:
        state["label_head.logit_scale"] = scale.reshape(1)
    return state


def read_spec(directory: Path | str) -> dict:
    """A checkpoint folder's ``encoder.json``; a clear error when the folder is not a radlab checkpoint."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a radlab checkpoint (no {SPEC_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the checkpoint folder is damaged") from err


def require_files(directory: Path, names: list[str]) -> None:
    """A clear error naming what a checkpoint folder lacks, before a loader meets it deep inside."""
    missing = [name for name in names if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is an incomplete radlab checkpoint: {', '.join(missing)} missing")


def local_matcher(spec: dict) -> LocalMatcher | None:
    """The checkpoint's word-region matcher (trained by GLoRIA's objective), weights to be loaded."""
    return LocalMatcher(**spec["local_match"]) if spec.get("local_match") else None


def load_encoder_checkpoint(directory: Path | str) -> RadEncoder:
    """Rebuild an encoder from its folder. Every weight comes from ``model.safetensors``: the tower's
    initial-weight options (``INITIAL_WEIGHTS``) are not followed, so the folder loads offline."""
    directory = Path(directory)
    spec = read_spec(directory)
    require_files(directory, [WEIGHTS_FILE] + ([TEXT_DIR] if spec["text_tower"] and not spec.get("external") else []))
    if spec.get("external"):
        return _load_continued(directory, spec)
    preprocess = Preprocess(**spec["preprocess"])
    tower = spec["image_tower"]
    kwargs = {k: v for k, v in tower.get("kwargs", {}).items() if k not in INITIAL_WEIGHTS}  # all in the file
    if (directory / IMAGE_DIR).is_dir():
        kwargs["path"] = str(directory / IMAGE_DIR)
    if takes_input_statistics(tower["name"]) and "input_mean" not in kwargs:
        kwargs.update(input_mean=None, input_std=None)  # saved before towers adapted radlab's input: as trained
    image = build_image_tower(tower["name"], preprocess.image_size, preprocess.mean, preprocess.std, **kwargs)
    state = upgrade_state(load_file(str(directory / WEIGHTS_FILE)))
    text = None
    if spec["text_tower"] is not None:
        text_dir = directory / TEXT_DIR
        hf_model = AutoModel.from_config(AutoConfig.from_pretrained(text_dir))
        text = HFTextTower(hf_model, AutoTokenizer.from_pretrained(text_dir), **spec["text_tower"])
    head = LabelHead(spec["label_head"]["class_names"], spec["embed_dim"]) if spec["label_head"] else None
    model = RadEncoder(image, text, spec["embed_dim"], preprocess, head,
                       projection_kind=spec.get("projection", "linear"))
    model.local_match = local_matcher(spec)
    model.load_state_dict(state)
    model.seen_classes = spec.get("seen_classes")
    return model.eval()


def _load_continued(directory: Path, spec: dict) -> RadEncoder:
    """A run that continued a public encoder: its architecture (and tokenizer) from the source, the text tower
    dropped when the run trained none, the run's label head, then strictly the folder's weights."""
    from radlab.models import load_encoder

    try:
        model = load_encoder(spec["external"])
    except Exception as err:  # whatever the format's loader raises, said with the checkpoint that needs it
        raise RuntimeError(f"{directory} continued the public encoder {spec['external']!r}, whose files rebuild "
                           f"its architecture and tokenizer; loading them failed: {err}") from err
    if spec["text_tower"] is None:
        model.text_tower = model.text_proj = None
    model.label_head = LabelHead(spec["label_head"]["class_names"], spec["embed_dim"]) if spec["label_head"] else None
    model.local_match = local_matcher(spec)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    model.seen_classes = spec.get("seen_classes")
    return model.eval()
