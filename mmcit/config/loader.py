"""A strict YAML -> dataclass loader that knows no concrete component.

One experiment is one YAML file that maps one-to-one onto a tree of dataclasses. Loading is strict:
an unknown key or a value of the wrong type is a ``ConfigError`` that names the key and lists the
valid ones. ``key.sub=value`` overrides (from the command line) are applied before the dataclasses
are built; a YAML may name a ``base:`` file (relative to itself) whose values it overrides.

Plug-in configs (a method's, a backend's) are resolved through their registry: a dataclass with a
``__registry__`` class attribute is a base class whose ``type:`` value names a registry entry, and
the entry's ``config_cls`` is built instead (where the mapping leaves ``type`` out, the registry's
default). After building, every dataclass in the tree that has a ``validate()`` method is validated,
innermost first, so that each layer checks only its own values.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mmcit.errors import ConfigError

__all__ = ["from_dict", "to_dict", "read_yaml", "apply_overrides", "load", "validate_tree", "merge"]

T = TypeVar("T")
_SCI = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCI.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if tp in (int, float, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _resolve(cls: type, data: dict, prefix: str) -> type:
    """The dataclass to build for ``data``: a plug-in base resolves ``type:`` through its registry."""
    registry = getattr(cls, "__registry__", None)
    if registry is None or ("type" not in data and cls.__dict__.get("__registry__") is None):
        return cls  # a concrete config without a type given stays what it is
    kind = data.get("type", registry.default)
    return registry.get(kind, key=f"{prefix or 'config'}.type").config_cls


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    cls = _resolve(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"valid keys: {', '.join(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
              for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """The plain-data form of a config tree (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, recursively; a mapping whose ``type`` differs from the base's
    replaces it whole (a different method's keys do not mix with the base's)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if v.get("type", out[k].get("type")) != out[k].get("type"):
                out[k] = v
            else:
                out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML file, following ``base:`` includes (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        data = merge(read_yaml(path.parent / base), data)
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings; values parse as YAML (``lr=1e-4``, ``tasks=[A,B]``)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        if isinstance(value, str) and _SCI.fullmatch(value):
            value = float(value)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return data


def validate_tree(cfg: Any) -> None:
    """Call ``validate()`` on every dataclass of the tree, innermost first."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_tree(value)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (optional), apply ``overrides``, build ``cls`` strictly and validate it."""
    data = read_yaml(path) if path is not None else {}
    cfg = from_dict(cls, apply_overrides(data, list(overrides or [])))
    validate_tree(cfg)
    return cfg
