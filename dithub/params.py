"""Parameters of registered algorithms (merge, rebase): defaults, overrides, types.

CLI values arrive as strings (``--param density=0.2``); each is parsed to the type of its default,
and an unknown name or a bad value is one BadInput that lists what is valid.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput


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

    def params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``given``; unknown names and wrong types are BadInput."""
        return resolve_params(self.name, self.defaults, given)

    def recorded(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a recorded op ran with (``legacy`` values for those it predates)."""
        return {**{k: v for k, v in self.legacy.items() if k not in params}, **params}


def resolve_params(method: str, defaults: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``defaults`` overridden by ``given``; unknown names and wrong types are BadInput."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
        raise BadInput(f"method {method!r} has no parameter {unknown[0]!r}", f"valid parameters: {valid}")
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _coerce(method, k, v, defaults[k])
    return out


def _coerce(method: str, name: str, value: Any, default: Any) -> Any:
    """Parse ``value`` (often a CLI string) to the type of the default."""
    kind = type(default)
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind in (int, float, str, bool):
            return kind(value)
    except (TypeError, ValueError):
        raise BadInput(f"parameter {name!r} of {method!r} must be {kind.__name__}, got {value!r}") from None
    return value
