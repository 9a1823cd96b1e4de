"""YAML configs with ``key=value`` overrides from the command line (dotted keys, YAML-parsed values)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from radlab.registry import Registry


def load_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config {path} does not exist")
    with path.open("rb") as stream:  # YAML errors then name the file, not "<unicode string>"
        data = yaml.safe_load(stream) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    return data


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, null...)."""
    out = yaml.safe_load(yaml.safe_dump(config)) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: its value is not valid YAML ({_first_line(err)})") from None
    return out


def _first_line(err: yaml.YAMLError) -> str:
    """The problem a YAML error names, without its "<unicode string>" position block."""
    problem = getattr(err, "problem", None)
    return str(problem) if problem else str(err).splitlines()[0]


def registered(registry: Registry, name: str, key: str) -> Any:
    """``registry``'s entry ``name``, which the config gives at ``key``; an unknown name is a ValueError naming
    ``key``, so pydantic reports it as a config error."""
    try:
        return registry.get(name)
    except KeyError as err:
        raise ValueError(f"{key}: {err.args[0]}") from None


def named_parameters(factory: Callable[..., Any]) -> frozenset[str]:
    """The arguments ``factory`` takes by keyword name (``**kwargs`` not counted)."""
    return frozenset(p.name for p in inspect.signature(factory).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def parameter_names(factory: Callable[..., Any]) -> frozenset[str] | None:
    """The arguments ``factory`` takes by keyword; None when it takes any (``**kwargs``)."""
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
        return None
    return named_parameters(factory)


def refuse_unknown_kwargs(kwargs: Mapping[str, Any], accepted: Collection[str] | None, key: str, what: str) -> None:
    """Refuse the keyword arguments at config ``key`` that ``what`` does not take (``accepted`` None: it takes
    any), naming each by its dotted key and listing the accepted ones."""
    unknown = [f"{key}.{name}" for name in kwargs if accepted is not None and name not in accepted]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not an argument of {what}, which takes "
                         f"{', '.join(sorted(accepted or ()))}")
