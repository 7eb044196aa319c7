"""The registry of merge methods: pure functions on tensors, named, with paper and defaults.

A full-space method takes the T task-vector tensors of one weight (same shape) and returns the
merged update for that weight; it never sees files, refs or other tensors, so the executor can
stream a model tensor by tensor. Methods that draw random numbers take ``seed`` and ``key`` (the
tensor's name), so each tensor's randomness is fixed by the recorded seed alone.

A method is declared (``declare``, in ``catalog``: no torch) and implemented (``implements``, in the
module the declaration names, which is imported when the method first runs)."""
from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import BadInput
from ..params import Algorithm, Range, Registry, describe

if TYPE_CHECKING:
    from ...kernels.device import DeviceKernel

MergeFn = Callable[..., Any]
"""Full space: tensors -> tensor; LoRA space: factors -> (A, B); sequential: one tensor's update."""


@dataclass(frozen=True)
class MergeMethod(Algorithm):
    """A registered merge method: its function, paper, defaults and what it needs."""

    random: bool = False
    space: str = "full"
    """``full``: T tensors of one weight -> merged tensor; ``lora``: T (A, B, scale) -> (A, B) at scale 1;
    ``sequential``: one input at a time joins a running merge whose state its commit keeps (OPCM);
    ``activation``: each linear layer from the inputs' weights and the Gram matrices of that layer's
    inputs on probe sets (RegMean, CoM), which the merge operation measures by running the model."""
    chained: bool = False
    """An activation method whose statistics come from the partially merged model, layer after layer
    (CoM), rather than from each input's own model (RegMean)."""
    matrices_only: bool = False
    """Defined on 2-D weights only (SVD methods); the executor averages every other tensor."""
    inner: str | None = None
    """The parameter naming an inner full-space rule (Core Space's ``rule``): the method also takes
    that rule's parameters (but ``seed``, its own), checked against the rule's definition."""
    weighted: bool = False
    """Takes per-input weights (``weights=``), as the paper or mergekit defines them."""
    device_kernel: bool = False
    """The device kernels run it in chunks (``device``, given by its implementation)."""
    module: str = ""
    """The module of ``dithub.algorithms.merge`` that implements it."""

    @property
    def function(self) -> MergeFn:
        """The implementation (its module imported if it was not)."""
        return _implementation(self)[0]

    @property
    def device(self) -> DeviceKernel | None:
        """How the device kernels run it in chunks (None: the torch function, on whole tensors)."""
        return _implementation(self)[1]

    def params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``given``; with an inner rule, that rule's parameters too (every
        one recorded, so a replay does not depend on the rule's defaults)."""
        if self.inner is None:
            return super().params(given)
        given = dict(given or {})
        own = super().params({k: v for k, v in given.items() if k in self.defaults})
        rule = REGISTRY[own[self.inner]]
        rest = {k: v for k, v in given.items() if k not in self.defaults}
        unknown = sorted(set(rest) - set(rule.defaults) | (set(rest) & {"seed"}))
        if unknown:
            raise BadInput(f"method {self.name!r} with {self.inner}={rule.name} has no parameter {unknown[0]!r}",
                           f"valid parameters: {describe(self)}; of {rule.name}: {describe(rule)} (seed is {self.name}'s)")
        return {**own, **{k: v for k, v in rule.params(rest).items() if k != "seed"}}

    def recorded(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """With an inner rule, that rule's ``legacy`` values too (but ``seed``, Core Space's own)."""
        own = super().recorded(params)
        if self.inner is None:
            return own
        rule = REGISTRY.get(str(own.get(self.inner, self.defaults[self.inner])))
        older = {k: v for k, v in (rule.legacy if rule else {}).items() if k not in own and k != "seed"}
        return {**older, **own}

    def scale_for(self, params: Mapping[str, Any]) -> str | None:
        """The parameter that scales the merged update last, given the chosen ``params`` (with an
        inner rule: that rule's scale)."""
        if self.inner is not None:
            return get_method(str(params.get(self.inner, self.defaults[self.inner]))).scale_param
        return self.scale_param

    @property
    def capabilities(self) -> frozenset[str]:
        flags = {"device-kernel": self.device_kernel, "random": self.random, "weighted": self.weighted,
                 "matrices-only": self.matrices_only, "chained": self.chained}
        return frozenset({self.space, *(name for name, on in flags.items() if on)})

    @property
    def sequential(self) -> bool:
        """Merges one input per commit into a running merge (no plan of all inputs at once)."""
        return self.space == "sequential"

    @property
    def elementwise(self) -> bool:
        """Defined entry by entry on tensors of any shape (full space, not matrices only)."""
        return self.space == "full" and not self.matrices_only

    def applies_to(self, shape: Sequence[int], vectors: str | None = None, name: str = "") -> bool:
        """Whether this method merges tensor ``name`` of ``shape`` (others are averaged): matrices-only
        methods 2-D tensors but CLIP's ``text_projection`` (as danielm1405/iso-merging; with
        ``vectors="mean"``, merges recorded before, every 2-D tensor); elementwise methods every
        tensor, or (``vectors="mean"``) those of two or more dimensions."""
        if self.matrices_only:
            return len(shape) == 2 and (vectors == "mean" or "text_projection" not in name)
        return vectors != "mean" or len(shape) >= 2

    @property
    def chooses_vectors(self) -> bool:
        """Whether merges by this method record ``vectors`` (how tensors it does not decompose merge)."""
        return self.elementwise or self.matrices_only

    @property
    def scale_param(self) -> str | None:
        """The parameter that scales the merged update last (what ``--alpha`` sets), if any (a
        sequential merge has none: OPCM's alpha is a share of the spectrum)."""
        if self.sequential or self.space == "activation":
            return None
        return next((p for p in ("alpha", "lam") if p in self.defaults), None)

    def __call__(self, vectors: Sequence[Any], *, key: str = "", weights: Sequence[float] | None = None,
                 **params: Any) -> Any:
        full = self.params(params)
        if self.random:
            full["key"] = key
        weights = check_weights(self, weights, len(vectors))
        if self.weighted:
            full["weights"] = weights
        return self.fn(vectors, **full)


REGISTRY: Registry[MergeMethod] = Registry("merge")


def check_weights(method: MergeMethod, weights: Sequence[float] | None, n: int) -> list[float] | None:
    """Per-input weights as floats, or None where there are none or all are 1 (the unweighted merge);
    BadInput for a method that takes none, a count other than ``n`` or a weight that is not finite."""
    if weights is None:
        return None
    out = [float(w) for w in weights]
    if len(out) != n:
        raise BadInput(f"{len(out)} weights for {n} inputs", "give one weight per input")
    if not all(math.isfinite(w) for w in out):
        raise BadInput(f"weights must be finite numbers, got {out}")
    if all(w == 1.0 for w in out):
        return None
    if not method.weighted:
        with_weights = ", ".join(REGISTRY.having("weighted"))
        raise BadInput(f"{method.name} takes no per-input weights (neither its paper nor mergekit defines them)",
                       f"methods with weights: {with_weights}")
    return out


def declare(name: str, module: str, *, paper: str, defaults: dict[str, Any] | None = None, space: str = "full",
            matrices_only: bool = False, legacy: dict[str, Any] | None = None, ranges: dict[str, Range] | None = None,
            choices: dict[str, tuple[str, ...]] | None = None, check: Callable[[dict[str, Any]], str | None] | None = None,
            inner: str | None = None, random: bool = False, weighted: bool = False, device_kernel: bool = False,
            chained: bool = False) -> MergeMethod:
    """Declare a method implemented in ``dithub.algorithms.merge.<module>``: each numeric parameter
    with its range, each string one with its choices; ``random`` (it takes ``seed`` and ``key``),
    ``weighted`` (it takes ``weights``) and ``device_kernel`` are checked against the implementation."""
    if random and "seed" not in (defaults or {}):
        raise TypeError(f"{name}: a random method must declare a seed default")
    return REGISTRY.add(MergeMethod(name, _Deferred(name), paper, dict(defaults or {}), dict(legacy or {}), dict(ranges or {}),
                                    dict(choices or {}), check, random=random, space=space, matrices_only=matrices_only,
                                    inner=inner, weighted=weighted, device_kernel=device_kernel, module=module,
                                    chained=chained))


_IMPLEMENTED: dict[str, tuple[MergeFn, DeviceKernel | None]] = {}


@dataclass(frozen=True)
class _Deferred:
    """A declared method's function, imported with its module on first call."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _implementation(REGISTRY[self.name])[0](*args, **kwargs)


def _implementation(method: MergeMethod) -> tuple[MergeFn, DeviceKernel | None]:
    if method.name not in _IMPLEMENTED:
        importlib.import_module(f"{__package__}.{method.module}")  # a module of this package, named by the catalog
    if method.name not in _IMPLEMENTED:
        raise TypeError(f"{method.module} does not implement merge method {method.name!r}")
    return _IMPLEMENTED[method.name]


def implements(name: str, *, device: DeviceKernel | None = None) -> Callable[[MergeFn], MergeFn]:
    """Give declared method ``name`` its function (and its device kernel): the function's keyword-only
    parameters must be exactly the declared defaults (+ ``key`` if random, ``weights`` if weighted)."""

    def wrap(fn: MergeFn) -> MergeFn:
        method = REGISTRY[name]
        sig = inspect.signature(fn)
        kw = {p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        declared = set(method.defaults) | ({"key"} if method.random else set()) | ({"weights"} if method.weighted else set())
        if kw != declared:
            raise TypeError(f"{name}: keyword parameters {sorted(kw)} do not match its declaration {sorted(declared)}")
        if (device is not None) != method.device_kernel:
            raise TypeError(f"{name}: declared {'with' if method.device_kernel else 'without'} a device kernel")
        _IMPLEMENTED[name] = (fn, device)
        return fn

    return wrap


VECTORS = ("method", "mean")
"""How a merge treats the tensors its method is not defined on: as the method's reference code
(the default: elementwise methods merge 1-D tensors too; matrices-only methods average the others
and scale them by α with the rest), or ``mean`` (averaged, unscaled: merges recorded before)."""


def recorded_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a recorded merge op ran with (see ``Algorithm.legacy``; an elementwise merge recorded
    without ``vectors`` averaged its 1-D tensors)."""
    if method not in REGISTRY:
        return dict(params)
    out = REGISTRY[method].recorded(params)
    if REGISTRY[method].chooses_vectors and "vectors" not in out:
        out["vectors"] = "mean"
    return out


def get_method(name: str) -> MergeMethod:
    """The registered method ``name``, or BadInput listing the valid names."""
    return REGISTRY.lookup(name)
