"""Algorithms: pure functions on tensors, registered by name with their paper, defaults, ranges,
choices and legacy values (``params.Algorithm``): merge, rebase and revert methods."""
from .params import Algorithm, Range, describe

__all__ = ["Algorithm", "Range", "describe"]
