"""Method configs (frozen dataclasses) from user-supplied JSON objects (a protobuf Struct).

Each value is checked against the type of the field's default (bool, int, float, str, or a
tuple: of floats when the default's first element is a float, else of strings); an unknown
name, a wrong type or a rejected value (the dataclass raises ValueError in __post_init__) is
an InvalidInput naming `<where>.<name>`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

from services.common.errors import InvalidInput

T = TypeVar("T")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(default: Any, value: Any, where: str) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidInput(where, "must be true or false")
        return value
    if isinstance(default, int):
        if not number or float(value) != int(value):
            raise InvalidInput(where, "must be an integer")
        return int(value)
    if isinstance(default, float):
        if not number or not math.isfinite(value):
            raise InvalidInput(where, "must be a finite number")
        return float(value)
    if isinstance(default, tuple):
        numeric = bool(default) and isinstance(default[0], float)
        if not isinstance(value, list) or not value:
            raise InvalidInput(where, "must be a non-empty list")
        if numeric:
            return tuple(_coerce(0.0, v, where) for v in value)
        if not all(isinstance(v, str) for v in value):
            raise InvalidInput(where, "must be a non-empty list of strings")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InvalidInput(where, "must be a string")
        return value
    raise InvalidInput(where, "cannot be set here")


def config_from_dict(
    cls: type[T], values: dict[str, Any], where: str, fixed: dict[str, Any] | None = None
) -> T:
    """cls(**fixed, **values) with every value type-checked; errors name where.<field>."""
    fixed = fixed or {}
    settable = {
        f.name: f
        for f in dataclasses.fields(cls)
        if f.init and f.name not in fixed  # type: ignore[arg-type]
    }
    unknown = sorted(set(values) - set(settable))
    if unknown:
        raise InvalidInput(
            f"{where}.{unknown[0]}", f"unknown; known: {', '.join(sorted(settable))}"
        )
    parsed = {
        name: _coerce(_default(settable[name]), value, f"{where}.{name}")
        for name, value in values.items()
    }
    try:
        return cls(**fixed, **parsed)
    except ValueError as exc:
        raise InvalidInput(where, str(exc)) from exc
