"""Typed configuration helpers: dataclass <-> JSON, with "did you mean" on unknown keys.

Every stage has one frozen dataclass (``FinetuneConfig``, ``ExportConfig``, ...). The CLI, a
``--config FILE`` and the Python API all fill the same class; ``to_dict`` writes it beside the
artifact so any result can be reproduced from its folder.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, did_you_mean

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config dataclass (Enums as values, Paths as strings)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return to_dict(v)
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def from_dict(cls: type[T], data: dict, *, source: str = "config") -> T:
    """Build ``cls`` from a dict, converting Enums/Paths; unknown keys raise with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object of options, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown option {key!r}.{did_you_mean(key, fields)} Valid: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, f"{source}: option '{key}'")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: cannot use {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = [m.value for m in tp]
            raise ConfigError(f"{where}: '{value}' is not one of {', '.join(valid)}.{did_you_mean(value, valid)}") from None
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=where)
    return value


def load_config_file(cls: type[T], path: Path, overrides: dict | None = None) -> T:
    """Read a JSON config file into ``cls``; ``overrides`` (explicit CLI options) win."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of options")
    data.update(overrides or {})
    return from_dict(cls, data, source=str(path))


def coerce_enums(obj: Any, fields: dict[str, type[enum.Enum]]) -> None:
    """In a frozen dataclass's __post_init__: turn strings into the named Enum fields,
    or raise ConfigError listing the valid values with a suggestion."""
    for name, cls in fields.items():
        v = getattr(obj, name)
        if v is None or isinstance(v, cls):
            continue
        try:
            object.__setattr__(obj, name, cls(v))
        except ValueError:
            valid = [m.value for m in cls]
            raise ConfigError(f"--{name.replace('_', '-')} '{v}' is not one of {', '.join(valid)}."
                              f"{did_you_mean(v, valid)}") from None
