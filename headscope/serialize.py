"""Results to JSON and back, from their frozen dataclasses: one helper instead of a to_json/from_json per type.

`to_payload(result)` writes every field (numpy arrays and tuples as lists, nested dataclasses as objects, a head or
MLP Component as [layer, head]); a field's metadata may rename it in JSON (`JSON_NAME`) or leave it out
(`metadata=NOT_STORED`: the cache key, whether the result came from the cache). A class may list derived values written
beside its fields for readers of the JSON (`json_derived`: JSON name -> attribute); they are ignored on reading.
`from_payload(cls, data, **given)` reads the fields back by their type annotations; a missing field takes its default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

import numpy as np

from headscope.component import Component

JSON_NAME = "json_name"
NOT_STORED = {"stored": False}
T = TypeVar("T")


def json_field(name: str, **kwargs: Any) -> Any:
    """A dataclass field stored under another name in JSON."""
    return dataclasses.field(metadata={JSON_NAME: name}, **kwargs)


def _value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Component):
        return [value.layer, value.head]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_payload(value)
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_payload(result: Any) -> dict[str, Any]:
    """Every stored field of a dataclass instance, then its derived values, as JSON-ready data."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        if f.metadata.get("stored", True):
            out[f.metadata.get(JSON_NAME, f.name)] = _value(getattr(result, f.name))
    for name, attribute in getattr(result, "json_derived", {}).items():
        out[name] = _value(getattr(result, attribute))
    return out


def _read(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return None if value is None else _read(options[0], value)
    if kind is Any:
        return value
    if kind is np.ndarray:
        return np.asarray(value, dtype=float)
    if kind is Component:
        return Component(int(value[0]), None if value[1] is None else int(value[1]))
    if origin is tuple:
        args = typing.get_args(kind)
        return tuple(_read(args[0], v) for v in value)
    if kind in (int, float, bool, str):
        return kind(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_payload(kind, value)
    return value


def from_payload(cls: type[T], data: dict[str, Any], **given: Any) -> T:
    """An instance of dataclass `cls` from to_payload's data; `given` sets fields directly (e.g. key, cached)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        name = f.metadata.get(JSON_NAME, f.name)
        if f.metadata.get("stored", True) and name in data:
            values[f.name] = _read(hints[f.name], data[name])
    return cls(**values)
