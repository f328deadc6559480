"""One-line errors for the files users give tuner: the file, the key, what is allowed, found.

The one validator of study files (`tuner.spec`), exported configurations (`trained.export`)
and model cards (`trained.card`): `Checker` names the file in every message and checks keys,
types and fields; the `is_*` predicates say what a JSON or TOML value is (a bool is never a
number); `shown` keeps a value short enough for one line whatever the file holds (a
10,000-digit integer, a string of a megabyte, tables nested thousands deep).
"""

from __future__ import annotations

import difflib
import math
import reprlib
from dataclasses import fields
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

MAX_SEED = 2**31 - 1  # numpy's RandomState takes < 2**32; leave room for per-worker offsets

# TOML integers are 64-bit; Python's parser reads any length, so larger ones are refused here.
TOML_INT_MIN, TOML_INT_MAX = -(2**63), 2**63 - 1

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8


def shown(value: Any) -> str:
    """repr(value), shortened for a one-line message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<{'minus ' if value < 0 else ''}an integer of {value.bit_length()} bits>"
    try:
        return _SHORT.repr(value)
    except (ValueError, RecursionError):  # an integer too long to print, inside a list
        return type_name(value)


def shown_key(key: str) -> str:
    """A key as written in the file, shortened and with control characters escaped."""
    return shown(key)[1:-1]


def type_name(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def short(value: Any) -> str:
    """repr(value), cut to 60 characters (for values read from JSON, already bounded)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_fraction(value: Any) -> bool:
    return is_number(value) and 0 <= value <= 1


def is_kind(value: Any, kind: type) -> bool:
    """Whether a value read from a file is a `kind`: ints pass as floats, bools as neither."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return is_int(value)
    return isinstance(value, kind)


def kind_name(kind: type) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}[kind]


class Checker:
    """Builds error messages that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> TunerError:
        return TunerError(f"{self.path}: {key}: {message}")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {type_name(value)}")
        return value

    def no_unknown(self, table: dict[str, Any], allowed: set[str] | list[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}{shown_key(key)}", unknown_key(key, allowed))

    def typed(self, value: Any, kind: type, key: str) -> Any:
        """Check a scalar's type; ints are accepted where floats are expected."""
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.fail(key, f"must be a finite number, got {shown(value)}") from None
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.fail(
                key, f"must be {kind_name(kind)}, got {type_name(value)} {shown(value)}"
            )
        if kind is float and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if kind is int:
            self.toml_int(value, key)
        return value

    def toml_int(self, value: int, key: str) -> None:
        """Refuse integers outside TOML's 64-bit range."""
        if not TOML_INT_MIN <= value <= TOML_INT_MAX:
            raise self.fail(
                key,
                f"must be an integer from -2**63 to 2**63 - 1 (TOML's range), got {shown(value)}",
            )

    def fields_of(self, values: dict[str, Any], cls: type, where: str) -> None:
        """Each key of `values` must be a field of `cls` whose default has the same type."""
        defaults = cls()
        names = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in names:
                raise self.fail(f"{where}.{key}", unknown_key(key, names))
            kind = type(getattr(defaults, key))
            if kind in (int, float, bool, str) and not is_kind(value, kind):
                raise self.fail(f"{where}.{key}", f"must be {kind.__name__}, got {value!r}")

    def numbers(self, values: Any, key: str, count: int | None, high: float) -> tuple[float, ...]:
        """A list of finite numbers from 0 to `high`, `count` long when given."""
        if not isinstance(values, list) or (count is not None and len(values) != count):
            length = "a list" if count is None else f"a list of {count} (one per input channel)"
            raise self.fail(key, f"must be {length} of numbers, got {short(values)}")
        allowed = ">= 0" if high == math.inf else f"from 0 to {high:g}"
        for index, value in enumerate(values):
            if not (is_number(value) and 0 <= value <= high):
                raise self.fail(
                    f"{key}[{index}]", f"must be a finite number {allowed}, got {value!r}"
                )
        return tuple(float(value) for value in values)

    def dataclass_section(self, data: dict[str, Any], key: str, cls: type) -> Any:
        """Parse a flat table into a dataclass, checking keys and value types."""
        table = self.table(data, key)
        names = {f.name: f for f in fields(cls)}
        self.no_unknown(table, set(names), f"[{key}].")
        values = {}
        for name, value in table.items():
            default = getattr(cls(), name)
            kind = type(default) if default is not None else int
            values[name] = self.typed(value, kind, f"[{key}].{name}")
        return cls(**values)


def unknown_key(key: Any, allowed: set[str] | list[str]) -> str:
    """ "unknown key; did you mean 'x'? allowed: ..." (the guess when one is close)."""
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {guess}allowed: {', '.join(sorted(allowed)) or '(none)'}"


def check_seed(check: Checker, value: int, key: str) -> None:
    if not 0 <= value <= MAX_SEED:
        raise check.fail(key, f"must be an int from 0 to {MAX_SEED}, got {value}")
