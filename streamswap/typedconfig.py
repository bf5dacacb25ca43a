"""Build typed dataclasses from plain dicts (YAML), reporting every error with its key path.

Each package owns its settings dataclasses; this module only knows how to fill and check
them. Constraints live in field metadata so they are declared next to the field:

    detect_every: int = field(default=1, metadata=limits(min=1))
    provider: str = field(default="auto", metadata=choices("auto", "cpu"))
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    runtime_checkable,
)

from streamswap.errors import ConfigError
from streamswap.safeyaml import shorten

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@runtime_checkable
class SelfValidating(Protocol):
    """A settings class with checks across its fields; `from_dict` calls `validate(path)`
    once the fields are filled."""

    def validate(self, where: str) -> None: ...


def limits(min: float | None = None, max: float | None = None) -> dict[str, Any]:
    """Field metadata: inclusive numeric bounds."""
    return {"min": min, "max": max}


def choices(*allowed: str) -> dict[str, Any]:
    """Field metadata: the value must be one of `allowed`."""
    return {"choices": tuple(allowed)}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        if not get_args(tp):
            return "a list"
        item = get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(item) or _type_name(item)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {shorten(value)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: must be {_type_name(tp)}, got {shorten(value)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {shorten(value)}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {shorten(value)}")
        key_tp, val_tp = get_args(tp) or (str, Any)
        return {_convert(k, key_tp, path): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {shorten(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {shorten(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {shorten(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {shorten(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _check(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    lo, hi = meta.get("min"), meta.get("max")
    # NaN compares false with every bound, so it would slip through the checks below.
    if (lo is not None or hi is not None) and isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{path}: must be a number, got {shorten(value)}")
    if lo is not None and value < lo:
        bound = f"between {lo} and {hi}" if hi is not None else f"≥ {lo}"
        raise ConfigError(f"{path}: must be {bound}, got {shorten(value)}")
    if hi is not None and value > hi:
        bound = f"between {lo} and {hi}" if lo is not None else f"≤ {hi}"
        raise ConfigError(f"{path}: must be {bound}, got {shorten(value)}")
    allowed = meta.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{path}: must be one of {', '.join(allowed)}; got {shorten(value)}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Fill dataclass `cls` from `data`, naming the full key path of any bad key or value."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {shorten(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        name = str(unknown[0]) if len(str(unknown[0])) <= 80 else shorten(unknown[0])
        key = f"{path}.{name}" if path else name
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"{key}: unknown key (allowed here: {allowed})")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        converted = _convert(value, hints[name], key)
        _check(converted, fields[name].metadata, key)
        kwargs[name] = converted
    obj = cls(**kwargs)
    if isinstance(obj, SelfValidating):
        obj.validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a settings object (what `config.dump_config` writes as YAML)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating levels as needed (CLI overrides)."""
    node = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            # Replacing it would hide the bad value the file gave for this section.
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{where}: expected a mapping, got {shorten(child)}")
        node = child
    node[parts[-1]] = value
