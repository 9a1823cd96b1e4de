"""Encoders: image and text towers, the joint ``RadEncoder``, and loaders for encoders by format.

``load_encoder("DIR")`` loads a radlab checkpoint; ``load_encoder("FORMAT:PATH")`` loads an external
encoder through the ``ENCODERS`` registry (each entry: ``loader(path: str) -> RadEncoder``).
"""

from __future__ import annotations

from pathlib import Path

from radlab.models.checkpoint import load_encoder_checkpoint
from radlab.models.encoder import RadEncoder
from radlab.registry import Registry, import_submodules

ENCODERS: Registry = Registry("encoder format")
ENCODERS.register("radlab", "a radlab checkpoint folder (encoder.json + model.safetensors)")(load_encoder_checkpoint)


def load_encoder(spec: str | Path) -> RadEncoder:
    """A radlab checkpoint folder, or ``FORMAT:PATH`` for any registered encoder format."""
    text = str(spec)
    name, sep, path = text.partition(":")
    if sep and name in ENCODERS:
        return ENCODERS.get(name)(path)
    if sep and not Path(text).exists() and name.replace("-", "").replace("_", "").isalnum() and len(name) > 1:
        raise ValueError(f"{text}: {name!r} is not an encoder format ({', '.join(ENCODERS.names())}) and no "
                         f"folder {text} exists")
    return load_encoder_checkpoint(text)


import_submodules(__name__)

__all__ = ["ENCODERS", "RadEncoder", "load_encoder"]
