"""One memory pass per merged tensor: elementwise kernels that read each input once.

A merge method written as plain torch ops makes one pass over memory (and one fresh allocation,
whose page faults cost more than the arithmetic) per op: TIES over four 16M-entry inputs is ~40 ops.
As one loop that reads each input once and writes the output once, the same function is 10-30x
faster on a CPU (see docs/performance.md).

The plain function is the reference. On the CPU its loop is written in C (``native``: built once per
machine, ~1 s; every later process loads it in milliseconds); on other devices torch.compile fuses
it when the inputs are large. Kernels use only elementwise ops in a fixed order, so the native,
compiled and plain results are bitwise equal (tested), and a merge's tree id does not depend on the
path. The plain function runs when ``DITHUB_KERNELS=plain`` (default ``fused``), when the native
library cannot be built (no C compiler), and for good once compiling has failed.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor

from . import clib
from .clib import enabled

COMPILE_MIN_NUMEL = 1 << 18
"""Off the CPU, inputs smaller than this run the plain function: compiling would cost more than it saves."""

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("dithub.kernels")


def fused(native: Callable[..., Any]) -> Callable[[F], F]:
    """``fn(inputs, *args)`` as one pass: ``native(inputs, *args)`` on the CPU, compiled elsewhere."""

    def wrap(fn: F) -> F:
        state: dict[str, Any] = {"compiled": None, "failed": False}

        @functools.wraps(fn)
        def call(inputs: list[Tensor], *args: Any) -> Tensor:
            if not enabled():
                return fn(inputs, *args)
            if inputs[0].device.type == "cpu":
                return native(inputs, *args) if clib.available() else fn(inputs, *args)
            if state["failed"] or inputs[0].numel() < COMPILE_MIN_NUMEL:
                return fn(inputs, *args)
            try:
                if state["compiled"] is None:
                    import torch

                    state["compiled"] = torch.compile(fn, dynamic=True)
                return state["compiled"](inputs, *args)
            except Exception as exc:  # noqa: BLE001  unsupported platform: the plain path is exact too
                state["failed"] = True
                _log.warning("dithub: compiled merge kernels unavailable (%s); using plain torch", type(exc).__name__)
                return fn(inputs, *args)

        call.plain = fn  # type: ignore[attr-defined]
        call.state = state  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return wrap


def runs_fused(tensor: Tensor) -> bool:
    """Whether a fused kernel (not the plain function) runs on ``tensor``'s inputs."""
    if not enabled():
        return False
    return clib.available() if tensor.device.type == "cpu" else tensor.numel() >= COMPILE_MIN_NUMEL
