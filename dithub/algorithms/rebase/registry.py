"""The registry of rebase methods: how an adapter's update moves from one base to another.

A method is a function of a ``RebaseContext`` (the two bases' tensors, and what the method asked
the executor to measure: gradient signs, activations) and its parameters, returning a
``Transport``. A transport maps one update at a time — a dense ΔW or task-vector tensor, or a
LoRA pair (A, B) — so the executor streams adapters tensor by tensor, and the expensive part
(permutations, Procrustes maps, gradient signs) is computed once and reused for every adapter on
the same pair of bases (``rebase --all``). Methods do no I/O.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..params import Algorithm, Range, Registry


@dataclass
class RebaseContext:
    """What a method may look at: both bases, and measurements the executor made for it."""

    old: Mapping[str, Tensor]
    """The old base's tensors by checkpoint name (loaded lazily by the executor)."""
    new: Mapping[str, Tensor]
    config_old: dict[str, Any]
    config_new: dict[str, Any]
    keys: list[str]
    """The checkpoint tensors that the adapters being rebased change."""
    old_name: str = "old"
    new_name: str = "new"
    """The bases' names, for messages."""
    grad_signs: dict[str, Tensor] | None = None
    """Per key: the per-sample majority sign of −∇L at the new base (methods that need labels)."""
    activations: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] | None = None
    """Per 2-D key: inputs and outputs of that linear layer on the same probe inputs, (n, d) each:
    (input at old base, input at new base, output at old base, output at new base)."""


class Transport:
    """Moves one update from the old base's coordinates to the new base's (here: unchanged)."""

    def dense(self, key: str, delta: Tensor) -> Tensor:
        """The update of base tensor ``key`` (ΔW, a bias delta…) on the new base."""
        return delta

    def factors(self, key: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        """A LoRA pair on the new base (ΔW = s·B@A), or None when the result is not low-rank."""
        return a, b


RebaseFn = Callable[..., Transport]


@dataclass(frozen=True)
class RebaseMethod(Algorithm):
    """A registered rebase method: its function, paper, defaults and what it needs from the executor."""

    needs: str = "nothing"
    """``nothing`` (data-free), ``inputs`` (unlabelled probe inputs) or ``labels`` (a labelled probe)."""
    equal_widths: bool = True
    """Whether the two bases must have tensors of the same shapes."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({f"needs-{self.needs}"} | ({"equal-widths"} if self.equal_widths else set()))

    def __call__(self, ctx: RebaseContext, **params: Any) -> Transport:
        return self.fn(ctx, **self.params(params))


REGISTRY: Registry[RebaseMethod] = Registry("rebase")


def register_rebase(name: str, *, paper: str, defaults: dict[str, Any] | None = None, needs: str = "nothing",
                    equal_widths: bool = True, choices: dict[str, tuple[str, ...]] | None = None,
                    ranges: dict[str, Range] | None = None, legacy: dict[str, Any] | None = None) -> Callable[[RebaseFn], RebaseFn]:
    """Register a method; its keyword-only parameters must be exactly ``defaults``."""
    if needs not in ("nothing", "inputs", "labels"):
        raise TypeError(f"{name}: needs must be nothing, inputs or labels")

    def wrap(fn: RebaseFn) -> RebaseFn:
        kw = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if kw != set(defaults or {}):
            raise TypeError(f"{name}: keyword parameters {sorted(kw)} do not match defaults {sorted(defaults or {})}")
        REGISTRY.add(RebaseMethod(name, fn, paper, dict(defaults or {}), dict(legacy or {}), dict(ranges or {}), dict(choices or {}),
                                  needs=needs, equal_widths=equal_widths))
        return fn

    return wrap


def get_rebase(name: str) -> RebaseMethod:
    """The registered method ``name``, or BadInput listing the valid names."""
    return REGISTRY.lookup(name)


@register_rebase("naive", paper="2212.04089")
def naive(ctx: RebaseContext) -> Transport:
    """Add the update unchanged to the new base (task arithmetic's assumption; the baseline)."""
    return Transport()


def as_float(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
