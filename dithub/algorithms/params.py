"""Registered algorithms (merge, rebase, revert) in one shape: ``Algorithm`` (function, paper,
parameters with defaults, ranges, choices and legacy values, capabilities) in a ``Registry``.

CLI values arrive as strings (``--param density=0.2``); each is parsed to the type of its default
and checked against its declared range or choices (numbers are always finite) before anything is
read or written; an unknown name or a bad value is one BadInput naming the parameter, the value
and what is valid.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..errors import BadInput


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter may take: finite, between ``low`` and ``high`` (None: unbounded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        if self.low is None and self.high is None:
            return "any finite number"
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{low}, {high}"


REAL = Range()
UNIT = Range(0.0, 1.0)
NATURAL = Range(0.0, None)


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: its function, the paper it implements (arXiv id) and its defaults."""

    name: str
    fn: Callable[..., Any]
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)
    legacy: dict[str, Any] = field(default_factory=dict)
    """Parameters added after a release, with the value that behaves as before: a recorded op that
    lacks one is replayed with it, so old commits reproduce bit for bit."""
    ranges: dict[str, Range] = field(default_factory=dict)
    """The values each numeric parameter may take."""
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The values each string parameter may take."""
    check: Callable[[dict[str, Any]], str | None] | None = None
    """What the parameters must satisfy together (e.g. breadcrumbs' beta <= 1 - gamma): None or why not."""

    def __post_init__(self) -> None:
        for name, default in self.defaults.items():
            if isinstance(default, bool):
                continue
            if isinstance(default, str) and default not in self.choices.get(name, ()):
                raise TypeError(f"{self.name}: string parameter {name!r} needs its choices (and its default among them)")
            if isinstance(default, (int, float)) and not (name in self.ranges and self.ranges[name].contains(default)):
                raise TypeError(f"{self.name}: numeric parameter {name!r} needs a range holding its default")

    def params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``given``; unknown names, wrong types, values out of range and
        choices not offered are BadInput."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise BadInput(f"method {self.name!r} has no parameter {unknown[0]!r}", f"valid parameters: {describe(self)}")
        out = dict(self.defaults)
        for k, v in given.items():
            out[k] = value = _coerce(self.name, k, v, self.defaults[k])
            if k in self.ranges and not self.ranges[k].contains(value):
                raise BadInput(f"parameter {k!r} of {self.name!r} is {v}, outside {self.ranges[k]}")
            if k in self.choices and value not in self.choices[k]:
                raise BadInput(f"parameter {k!r} of {self.name!r} is {v!r}, not one of {', '.join(self.choices[k])}")
        why = self.check(out) if self.check is not None else None
        if why:
            raise BadInput(f"parameters of {self.name!r}: {why}", f"valid parameters: {describe(self)}")
        return out

    def recorded(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a recorded op ran with (``legacy`` values for those it predates)."""
        return {**{k: v for k, v in self.legacy.items() if k not in params}, **params}

    @property
    def capabilities(self) -> frozenset[str]:
        """What the executors must know of it, by name (e.g. ``device-kernel``, ``sequential``,
        ``needs-labels``): they branch on these, never on the algorithm's name."""
        return frozenset()


A = TypeVar("A", bound=Algorithm)


class Registry(dict[str, A], Generic[A]):
    """The algorithms of one kind (merge, rebase, revert) by name."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, algo: A) -> A:
        if algo.name in self:
            raise TypeError(f"{self.kind} method {algo.name!r} is registered twice")
        self[algo.name] = algo
        return algo

    def lookup(self, name: str) -> A:
        """The algorithm ``name``, or BadInput listing the valid names."""
        try:
            return self[name]
        except KeyError:
            raise BadInput(f"unknown {self.kind} method {name!r}", f"valid methods: {', '.join(sorted(self))}") from None

    def having(self, capability: str) -> list[str]:
        """The names of the algorithms with ``capability``, sorted."""
        return sorted(n for n, a in self.items() if capability in a.capabilities)


def describe(algo: Algorithm) -> str:
    """Each parameter with its default and what it may be."""
    parts = []
    for k, v in algo.defaults.items():
        allowed = algo.ranges.get(k) or (" | ".join(algo.choices[k]) if k in algo.choices else None)
        parts.append(f"{k}={v!r}" + (f" in {allowed}" if allowed else ""))
    return ", ".join(parts) or "none"


def _coerce(method: str, name: str, value: Any, default: Any) -> Any:
    """Parse ``value`` (often a CLI string) to the type of the default; numbers must be finite."""
    kind = type(default)
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind in (int, float, str, bool):
            out = kind(value)
            if kind is float and not math.isfinite(out):
                raise BadInput(f"parameter {name!r} of {method!r} is {value}, not a finite number")
            return out
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"parameter {name!r} of {method!r} must be {kind.__name__}, got {value!r}") from None
    return value


def finite(value: Any, what: str, hint: str | None = None) -> float:
    """``value`` (a CLI string, often) as a finite float; BadInput naming ``what`` otherwise."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what}: {value!r} is not a number", hint) from None
    if not math.isfinite(out):
        raise BadInput(f"{what} is {value}, not a finite number", hint)
    return out


def scale_value(value: float | str, what: str = "--alpha") -> float | str:
    """A final scale as given: ``auto``, or a finite number (BadInput otherwise)."""
    return value if value == "auto" else finite(value, what, "give a number, or auto")
