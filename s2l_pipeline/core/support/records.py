"""Dataclasses as plain JSON values and back, typed by their annotations: what the manifests
and a training run's stored record are written as."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def from_plain(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) > 1:  # e.g. int | str: JSON already holds the right kind
            return value
        [tp] = args
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: from_plain(hints[k], v) for k, v in value.items() if k in known})
    if origin is list:
        [arg] = typing.get_args(tp)
        return [from_plain(arg, v) for v in value]
    if origin is tuple:
        return tuple(value)
    return value
