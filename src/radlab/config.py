"""YAML configs with ``key=value`` overrides from the command line (dotted keys, YAML-parsed values)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from radlab.registry import Registry

M = TypeVar("M", bound=BaseModel)


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


def validated(model: type[M], config: dict[str, Any], source: Path | str, overrides: Sequence[str] = ()) -> M:
    """``model`` validated from ``config`` (read from ``source``, ``overrides`` applied); its errors become one
    ValueError, a line per bad key (``config_errors``)."""
    try:
        return model.model_validate(config)
    except ValidationError as err:
        raise ValueError(config_errors(err, model, source, overrides)) from err


def config_errors(err: ValidationError, model: type[BaseModel], source: Path | str,
                  overrides: Sequence[str] = ()) -> str:
    """One line per error of ``err``: ``SOURCE: dotted.key: reason``, an unknown key with the closest known one
    at its level, a key set by an override naming it."""
    lines = []
    for error in err.errors():
        key = dotted(error["loc"])
        reason = _reason(error, model)
        line = reason if key and reason.startswith(key) else f"{key}: {reason}" if key else reason
        given = [item for item in overrides if _related(key, item.partition("=")[0])]
        lines.append(f"{source}: {line}" + (f"; given by the override {given[-1]!r}" if given else ""))
    return "\n".join(lines)


def dotted(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a config key: ``optim.steps``, ``data.sources[0].path``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _related(key: str, override: str) -> bool:
    """Whether an override of ``override`` set the value at ``key`` or one inside it."""
    inner, outer = (key, override) if len(key) >= len(override) else (override, key)
    return bool(outer) and (inner == outer or inner.startswith((f"{outer}.", f"{outer}[")))


def _reason(error: Any, model: type[BaseModel]) -> str:
    """Why one value was refused, in a few words."""
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        known = _model_at(model, loc[:-1])
        names = list(known.model_fields) if known is not None else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        if close:
            return f"not a setting (did you mean {dotted((*loc[:-1], close[0]))}?)"
        return f"not a setting (settings here: {', '.join(names)})" if names else "not a setting"
    if kind == "missing":
        return "required, not given"
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    reason = error["msg"].removeprefix("Input ")
    value = error.get("input")
    return f"{reason} (got {value!r})" if value is None or isinstance(value, str | int | float | bool) else reason


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model that holds the settings at ``loc`` (list indices stepped over); None when not one."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _inner_model(current.model_fields[part].annotation)
    return current


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation is, or holds inside ``X | None``, ``list[X]`` and the like."""
    if isinstance(annotation, type) and not get_args(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
