"""One setting's value checked against its declaration: type, range, choices, check.

Kept apart from :mod:`prefork.config` (which declares the settings and merges
the sources) so that each stays readable; this module knows only a dataclass
field and its metadata.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ConfigError


def kind_of(field: dataclasses.Field) -> type:
    """The plain Python type of a setting: int, float, str, bool or tuple."""
    annotation = field.type
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    for kind in (int, float, str, bool):
        if text == kind.__name__:
            return kind
    if text.startswith(("Tuple", "tuple")):
        return tuple
    raise AssertionError(f"setting {field.name} has unsupported type {annotation!r}")


def coerce(field: dataclasses.Field, value: Any, origin: str) -> Any:
    """``value`` for setting ``field`` as read from ``origin``, or ConfigError naming the key."""
    name = field.name
    kind = kind_of(field)
    meta = field.metadata
    where = f"{origin}: key '{name}'"
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        if not value and field.default:     # bind must not be emptied
            raise ConfigError(f"{where}: must not be empty")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {_type_word(kind)}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['minimum']}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['maximum']}")
    problem = meta["check"](value) if meta["check"] else ""
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return value


def _type_word(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string",
            bool: "true or false"}[kind]
