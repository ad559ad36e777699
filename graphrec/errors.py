"""Exception classes, each carrying what went wrong in the library's own terms.

An error names the ``parameter`` it is about (an argument or config field as the Python API
spells it, or an input such as ``interactions``), the ``value`` that was given and what was
``expected``. ``str(error)`` reads ``parameter value: message; expected ...``. A message may
mention another parameter as ``{name}``. The command line spells the parameter and every
mention as its own flag (``cli/``), so no library message names a flag.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable

_MENTION = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class _Nothing:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _Nothing()
"""Marks an error that names a parameter without showing a value."""


def show_value(value: object) -> str:
    """How a value appears in a message: strings quoted, paths and the rest as str, floats
    short."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class GraphrecError(Exception):
    """Base class of every error graphrec raises on purpose.

    ``message``: what is wrong (may be empty when ``expected`` says it all; ``{name}`` mentions
    the parameter ``name``);
    ``parameter``: the argument, field or input it is about, or None;
    ``value``: what was given (``NO_VALUE``: not shown); ``expected``: what would be accepted.
    """

    def __init__(self, message: str = "", *, parameter: str | None = None,
                 value: object = NO_VALUE, expected: str | None = None):
        self.message = message
        self.parameter = parameter
        self.value = value
        self.expected = expected
        super().__init__(self.describe())

    def describe(self, spell: Callable[[str], str] | None = None) -> str:
        """The one-line message; ``spell`` maps the parameter to the caller's name for it
        (the command line's flag), identity when None."""
        head = ""
        if self.parameter is not None:
            head = spell(self.parameter) if spell is not None else self.parameter
        if self.value is not NO_VALUE:
            head = f"{head} {show_value(self.value)}" if head else show_value(self.value)
        body = _MENTION.sub(lambda m: spell(m.group(1)) if spell else m.group(1), self.message)
        if self.expected is not None:
            body = f"{body}; expected {self.expected}" if body else f"expected {self.expected}"
        return f"{head}: {body}" if head else body

    def __str__(self) -> str:
        return self.describe()


class DataError(GraphrecError):
    """An input file or array is missing, malformed or inconsistent."""


class ConfigError(GraphrecError):
    """A configuration value is out of range or inconsistent."""


class TextModelError(GraphrecError):
    """The text encoder cannot be loaded."""


class ArtifactError(GraphrecError):
    """A graph or model directory is missing, incomplete or incompatible."""


class UnknownUserError(GraphrecError):
    """A user id is not in the model."""


class UnknownItemError(GraphrecError):
    """An item id is not in the model."""


class DeviceError(GraphrecError):
    """The requested device is not available."""


class BusyError(GraphrecError):
    """Another process is writing the same work directory (it holds the lock)."""


def mention(parameter: str) -> str:
    """How a message names another parameter (spelled by the caller, e.g. as a flag)."""
    return "{" + parameter + "}"


def check_positive_int(parameter: str, value: object) -> int:
    """``value`` as an int, or ConfigError unless it is an integer >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(parameter=parameter, value=value, expected="a positive integer")
    return int(value)


def check_cutoffs(parameter: str, ks) -> list[int]:
    """Top-K cut-offs, sorted and de-duplicated, or ConfigError unless there is at least one
    and each is a positive integer."""
    ks = list(ks)
    if not ks:
        raise ConfigError("no cutoff given", parameter=parameter,
                          expected="one or more positive integers")
    return sorted({check_positive_int(parameter, k) for k in ks})


def check_range(parameter: str, value: float, low: float, high: float) -> float:
    """``value``, or ConfigError unless ``low <= value <= high`` (NaN refused)."""
    if not low <= value <= high:  # this way round so NaN fails too
        raise ConfigError(parameter=parameter, value=value,
                          expected=f"a number in [{low:g}, {high:g}]")
    return value
