"""Progress reporting without printing: lower layers call, the CLI renders."""
from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], Advance]
"""``progress(description, total)`` starts a task and returns ``advance(n)``."""


def no_progress(description: str, total: int) -> Advance:
    """The default: report nothing."""
    return lambda n: None
