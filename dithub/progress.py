"""Progress reporting without printing: lower layers call, the CLI renders."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[[int], None]


class ProgressFactory(Protocol):
    """``progress(description, total, unit)`` starts a task counted in ``unit`` (``bytes``, or
    what is counted: ``tensors``, ``objects``, ``commits``) and returns ``advance(n)``."""

    def __call__(self, description: str, total: int, unit: str = "bytes") -> Advance: ...


def no_progress(description: str, total: int, unit: str = "bytes") -> Advance:
    """The default: report nothing."""
    return lambda n: None
