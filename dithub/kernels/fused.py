"""One memory pass per merged tensor: elementwise kernels fused by torch.compile.

A merge method written as plain torch ops makes one pass over memory (and one
fresh allocation, whose page faults cost more than the arithmetic) per op: TIES
over four 16M-entry inputs is ~40 ops. Compiled by inductor, the same function
becomes one loop that reads each input once and writes the output once, 10-30x
faster on a CPU (see docs/performance.md).

The plain function is the reference and the fallback. It runs when the tensor is
small (compiling costs seconds, paid once per process and cached on disk), when
``DITHUB_COMPILE=0``, and for good once compiling has failed (no C++ compiler).
Kernels use only elementwise ops in a fixed order, so the compiled and plain
results are bitwise equal (tested), and a merge's tree id does not depend on the path.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor

COMPILE_MIN_NUMEL = 1 << 18
"""Inputs smaller than this run the plain function: compiling would cost more than it saves."""

F = TypeVar("F", bound=Callable[..., Tensor])
_log = logging.getLogger("dithub.kernels")


def _enabled() -> bool:
    return os.environ.get("DITHUB_COMPILE", "1").lower() not in ("0", "false", "no")


def fused(fn: F) -> F:
    """``fn(inputs, *args)`` compiled into one pass when the inputs are large; plain otherwise."""
    state: dict[str, Any] = {"compiled": None, "failed": False}

    @functools.wraps(fn)
    def call(inputs: list[Tensor], *args: Any) -> Tensor:
        if state["failed"] or not _enabled() or inputs[0].numel() < COMPILE_MIN_NUMEL:
            return fn(inputs, *args)
        try:
            if state["compiled"] is None:
                import torch

                state["compiled"] = torch.compile(fn, dynamic=True)
            return state["compiled"](inputs, *args)
        except Exception as exc:  # noqa: BLE001  no compiler, unsupported platform: the plain path is exact too
            state["failed"] = True
            _log.warning("dithub: compiled merge kernels unavailable (%s); using plain torch", type(exc).__name__)
            return fn(inputs, *args)

    call.plain = fn  # type: ignore[attr-defined]
    call.state = state  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def compiles(kernel: Callable[..., Any], numel: int) -> bool:
    """Whether ``kernel`` (made by ``fused``) runs compiled on inputs of ``numel`` entries."""
    return _enabled() and not kernel.state["failed"] and numel >= COMPILE_MIN_NUMEL  # type: ignore[attr-defined]
