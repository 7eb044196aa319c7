"""Merge algorithms: pure functions on tensors, registered by name with paper and defaults.

Declared (``catalog``, no torch): task_arithmetic, ties, dare, breadcrumbs, magmax (full space, per
tensor); tsv, iso_c, iso_cts (spectral, per 2-D tensor); concat, mean_ba, core_space, ema
(LoRA-native); opcm (sequential: one input per commit, its state kept with the merge). Each is
implemented in the module its declaration names, loaded (with torch) when it first runs. The
kernels are ``dithub.kernels``.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import catalog  # noqa: F401  declare the methods
from .registry import REGISTRY, MergeMethod, get_method, implements

_LAZY = {"dare_draws": "primitives", "dare_keep": "primitives", "kth_largest_abs": "primitives", "magnitude_threshold": "primitives"}
"""Helpers on tensors, loaded (with torch) when first used."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REGISTRY", "MergeMethod", "get_method", "implements", "dare_draws", "dare_keep", "kth_largest_abs", "magnitude_threshold"]
