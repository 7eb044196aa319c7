"""Checks on a commit that CI runs on merged adapters (integrity, structure, numeric sanity,
behaviour on probe sets, a backdoor screen), the ``dithub.toml`` policy, and git hooks.

The checks (and torch) are imported on first use, so that the CLI starts fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from .policy import CHECK_NAMES, Policy, Settings, load_policy

_LAZY = {"CHECKS": "checks", "CheckResult": "checks", "JSON_FORMAT": "run", "VerifyReport": "run", "verify": "run", "verify_many": "run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["CHECKS", "CHECK_NAMES", "CheckResult", "JSON_FORMAT", "Policy", "Settings", "VerifyReport", "load_policy", "verify", "verify_many"]
