"""The typed values of a settings section: each key's kind checks and converts what a config file
or the environment gave, and says in one line what is wrong with it (never the value itself).

Plain dataclasses and these few converters instead of a validation library: every ``swf``
command reads its settings at start, and pydantic's import and model building were a quarter of
the instructions a ``swf query`` executed. Environment values arrive as strings, so numbers and
booleans are read from text as well as from TOML's own types.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

Convert = Callable[[Any], Any]
S = TypeVar("S", bound="Section")


class Invalid(ValueError):
    """A value of the wrong kind; ``where`` is the index inside a list (``log_networks.0``)."""

    def __init__(self, message: str, where: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.where = where


class Secret:
    """A password or token: its text is only given by ``get_secret_value()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- the kinds ------------------------------------------------------------------------------------


def text(value: Any) -> str:
    if type(value) is not str:
        raise Invalid("Input should be a valid string")
    return value


def secret(value: Any) -> Secret:
    return Secret(text(value))


def path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if type(value) is not str:
        raise Invalid("Input should be a valid path")
    return Path(value)


def flag(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is str and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Invalid("Input should be a valid boolean")


def integer(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    raise Invalid("Input should be a valid integer")


def number(value: Any) -> float:
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            pass
    raise Invalid("Input should be a valid number")


def above(convert: Convert, bound: float) -> Convert:
    def check(value: Any) -> Any:
        converted = convert(value)
        if not converted > bound:
            raise Invalid(f"Input should be greater than {bound}")
        return converted
    return check


def between(convert: Convert, low: float, high: float) -> Convert:
    def check(value: Any) -> Any:
        converted = convert(value)
        if converted < low:
            raise Invalid(f"Input should be greater than or equal to {low}")
        if converted > high:
            raise Invalid(f"Input should be less than or equal to {high}")
        return converted
    return check


def matching(pattern: str) -> Convert:
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if not compiled.search(text(value)):
            raise Invalid(f"String should match pattern '{pattern}'")
        return value
    return check


def optional(convert: Convert) -> Convert:
    def check(value: Any) -> Any:
        return None if value is None else convert(value)
    return check


def networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if type(value) not in (list, tuple):
        raise Invalid("Input should be a valid list")
    found = []
    for index, item in enumerate(value):
        try:
            found.append(ipaddress.ip_network(text(item)))
        except (Invalid, ValueError):
            raise Invalid("Input is not a valid IPv4 or IPv6 network", (index,)) from None
    return tuple(found)


# -- sections -------------------------------------------------------------------------------------


def setting(default: Any, convert: Convert) -> Any:
    """A key of a section: its default and the kind its values are converted to."""
    return dataclasses.field(default=default, metadata={"convert": convert})


@dataclasses.dataclass(frozen=True, repr=False)
class Section:
    """A table of the config file. Its repr never shows a password, nor one inside a URL."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def build(cls: type[S], values: Mapping[str, Any]) -> tuple[S | None, list[Problem]]:
        """The section from ``values`` (keys absent take their defaults), or the problems of each
        key: (key path, message); an unknown key is reported with the message None."""
        problems: list[Problem] = []
        converted: dict[str, Any] = {}
        known = {field.name: field for field in dataclasses.fields(cls)}
        for key, value in values.items():
            field = known.get(key)
            if field is None:
                problems.append(((key,), None))
                continue
            try:
                converted[key] = field.metadata["convert"](value)
            except Invalid as problem:
                problems.append(((key, *map(str, problem.where)), str(problem)))
        return (None, problems) if problems else (cls(**converted), [])

    # Equality and hash by value, written once here: the sections are declared eq=False, as
    # dataclass would otherwise generate both for every one of them at import (~1M
    # instructions a section, on every command's start-up).
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={_public(value)!r}" for name, value in self._items())
        return f"{type(self).__name__}({shown})"

    def _items(self) -> Iterator[tuple[str, Any]]:
        for field in dataclasses.fields(self):
            yield field.name, getattr(self, field.name)


Problem = tuple[tuple[str, ...], "str | None"]  # (key path, message; None: an unknown key)


def _public(value: Any) -> Any:
    """A URL without the password its userinfo may hold (anything else unchanged)."""
    from agents.transport.broker import without_secret  # here: only a repr needs the broker's

    return without_secret(value) if type(value) is str and "://" in value else value
