"""Building a ``RadEncoder`` from a config section, and the spec of a built one for checkpoints."""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal, get_type_hints

import timm
import torch
from pydantic import BaseModel, ConfigDict, model_validator
from transformers import PreTrainedTokenizerBase

from radlab.config import named_parameters, parameter_names, refuse_unknown_kwargs, registered
from radlab.models.encoder import RadEncoder
from radlab.models.image_towers import IMAGE_TOWERS, TimmImageTower, build_image_tower
from radlab.models.text_towers import TEXT_TOWERS, builds_own_tokenizer
from radlab.models.towers import Preprocess
from radlab.registry import Registry

log = logging.getLogger(__name__)
# options timm's builder takes out of the keyword arguments before its model class sees them
TIMM_BUILDER_OPTIONS = ("pretrained_strict", "pruned", "features_only", "out_indices", "feature_cls")


class TowerConfig(BaseModel):
    """A tower by registry name plus its keyword arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kwargs: dict[str, Any] = {}


class ModelConfig(BaseModel):
    """``projection``: how the towers map into the ``embed_dim`` joint space (``models.encoder.projection``).

    ``external`` ("FORMAT:PATH", any ``radlab list encoders`` entry, e.g. ``open_clip:DIR``) continues training
    a public encoder as a whole: its towers, projections, tokenizer and preprocessing replace every other
    field here (``external_encoder``)."""

    model_config = ConfigDict(extra="forbid")
    external: str | None = None
    image_tower: TowerConfig = TowerConfig(name="vit_tiny_patch16_224")
    text_tower: TowerConfig | None = TowerConfig(name="bert_small")
    image_size: int = 128
    embed_dim: int = 128
    projection: Literal["linear", "mlp", "mlp_wide"] = "linear"
    mean: float = 0.5
    std: float = 0.25

    @model_validator(mode="after")
    def _tower_kwargs(self) -> ModelConfig:
        if self.external is None:  # else the towers are not built
            check_tower_kwargs(IMAGE_TOWERS, self.image_tower, "model.image_tower")
            if self.text_tower is not None:
                check_tower_kwargs(TEXT_TOWERS, self.text_tower, "model.text_tower")
        return self


def check_tower_kwargs(registry: Registry, tower: TowerConfig, key: str) -> None:
    """Refuse, by their dotted config keys, tower kwargs without a value (``{depth:1}`` in YAML flow style is
    the key "depth:1") and kwargs the tower's factory does not take (``tower_arguments``)."""
    for name, value in tower.kwargs.items():
        if value is None:
            option, colon, given = name.partition(":")
            hint = f" (YAML flow style needs a space after the colon: {{{option}: {given}}})" if colon else ""
            raise ValueError(f"{key}.kwargs.{name} has no value{hint}; give it one or leave it out")
    registered(registry, tower.name, f"{key}.name")
    refuse_unknown_kwargs(tower.kwargs, tower_arguments(registry, tower.name), f"{key}.kwargs",
                          f"{registry.kind} {tower.name!r}")


def tower_arguments(registry: Registry, name: str) -> frozenset[str] | None:
    """The kwargs a registered tower takes; None when any may be right (its factory takes ``**kwargs`` that
    are not a timm model's)."""
    factory = registry.get(name)
    named = parameter_names(factory)
    if named is None and get_type_hints(factory).get("return") is TimmImageTower:
        return timm_tower_arguments(name)
    return named


@functools.cache
def timm_tower_arguments(name: str) -> frozenset[str] | None:
    """What a timm image tower takes: radlab's options (``TimmImageTower``), ``timm.create_model``'s and its
    builder's, and the arguments of the timm model class, found by building the tower on the meta device (no
    memory, no initialisation); None when that class takes any."""
    with torch.device("meta"):
        backbone = IMAGE_TOWERS.build(name).backbone
    model_arguments = parameter_names(type(backbone))
    if model_arguments is None:
        return None
    radlab_options = named_parameters(TimmImageTower) - {"name"}
    timm_options = named_parameters(timm.create_model) - {"model_name"}
    return model_arguments | radlab_options | timm_options | set(TIMM_BUILDER_OPTIONS)


def build_encoder(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> RadEncoder:
    """Image tower (and text tower when configured) with projections; text towers built from scratch take
    the given tokenizer."""
    image = build_image_tower(cfg.image_tower.name, cfg.image_size, cfg.mean, cfg.std, **cfg.image_tower.kwargs)
    text = None
    if cfg.text_tower is not None:
        kwargs = dict(cfg.text_tower.kwargs)
        if not builds_own_tokenizer(cfg.text_tower.name):
            if tokenizer is None:
                raise ValueError(f"text tower {cfg.text_tower.name!r} needs a tokenizer")
            kwargs["tokenizer"] = tokenizer
        text = TEXT_TOWERS.build(cfg.text_tower.name, **kwargs)
    preprocess = Preprocess(image_size=cfg.image_size, mean=cfg.mean, std=cfg.std)
    return RadEncoder(image, text, cfg.embed_dim, preprocess, projection_kind=cfg.projection)


def external_encoder(spec: str, keep_text: bool) -> RadEncoder:
    """A public encoder (``load_encoder`` spec) made ready to train: every weight trainable, in train mode,
    without its own classifier head (an objective attaches its own), and without its text tower when the
    objective uses none (DDP refuses parameters that get no gradient)."""
    from radlab.models import load_encoder

    model = load_encoder(spec)
    if keep_text and not model.has_text:
        raise ValueError(f"the objective needs report text, but the encoder {spec!r} has no text tower")
    if not keep_text:
        model.text_tower = model.text_proj = None
    model.label_head = None
    model.requires_grad_(True)
    return model.train()


def freeze_unreached(model: RadEncoder) -> list[str]:
    """Freeze, and name, the tower and projection parameters that neither embedding reaches: a probe pass (two
    blank images, two short texts) and its backward. Public checkpoints carry poolers, classifier layers and mask
    tokens that no embedding uses (an objective that does, as DINOv2's iBOT the mask token, turns it back on)."""
    was_training = model.training
    model.eval().zero_grad(set_to_none=True)
    size = model.preprocess.image_size
    total = model.encode_image(model.preprocess.normalise(torch.zeros(2, 1, size, size))).sum()
    if model.has_text:
        total = total + model.encode_text(["no acute disease", "small left effusion"]).sum()
    total.backward()
    idle = [name for name, p in model.named_parameters()  # a public GLoRIA's matcher is its objective's to train
            if p.requires_grad and p.grad is None and not name.startswith("local_match.")]
    frozen = set(idle)
    for name, p in model.named_parameters():
        p.grad = None
        if name in frozen:
            p.requires_grad_(False)
    model.train(was_training)
    if idle:
        log.info("%d tensors no embedding reaches stay frozen (%s)", len(idle), ", ".join(idle[:4]))
    return idle
