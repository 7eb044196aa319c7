"""Removal by subtraction: θ' = θ_merged − α·τ_input.

* ``negation`` — Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089: negating a
  task vector forgets the task. On a task-arithmetic merge θ0 + λ Σ τ_t, subtracting λ·τ_k is the
  merge of the others (up to float rounding); on any other method (TIES, DARE, the spectral ones)
  the merge is not a sum of its inputs, so subtraction only approximates the removal. Default α:
  the merge's recorded final scale (λ, ``alpha`` or ``lam``). Tensors the merge averaged instead
  (1-D biases and norms; every non-matrix for the spectral methods) lose the input from their mean,
  (N·m − τ)/(N − 1), which is exact. ``--alpha auto --probe RETAIN`` picks
  the largest α on the grid 0.1 … 1.5 that keeps the probe's accuracy within ``margin`` = 0.02 of
  the merge's.
* ``ntk`` — knowledge removal in the linearized (neural tangent kernel) regime, after
  arXiv 2510.13606: adapters fine-tuned as linearized models, f(x; θ0) + J(θ0)(θ − θ0) (Ortiz-Jimenez
  et al., arXiv 2305.12827; ``dithub.train.linearized``), act on the linearized model as a sum, so
  subtracting a client's vector removes its influence on the outputs to first order. The same
  subtraction, refused unless the removed input was trained linearized (its task vector carries
  the metadata ``dithub.linearized = true``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..params import Algorithm, Registry

LINEARIZED = "dithub.linearized"
"""The safetensors metadata key (value ``true``) that marks a linearized task vector."""


def negate(merged: Tensor, removed: Tensor, alpha: float) -> Tensor:
    """θ_merged − α·τ (in fp32 for half-precision inputs)."""
    return merged.float() - alpha * removed.float()


@dataclass(frozen=True)
class RevertMethod(Algorithm):
    """A removal by subtraction: ``fn(merged, removed, alpha)`` on one tensor."""

    linearized_only: bool = False
    """Exact (to first order) only for inputs trained linearized: refused for the others."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"subtracts"} | ({"linearized-only"} if self.linearized_only else set()))


REGISTRY: Registry[RevertMethod] = Registry("revert")
REGISTRY.add(RevertMethod("negation", negate, "2212.04089"))
REGISTRY.add(RevertMethod("ntk", negate, "2510.13606", linearized_only=True))
EXACT = "exact"
"""Not a tensor function: the recorded merge replayed without the input (``ops.revert``)."""
METHODS = (EXACT, *REGISTRY)


def remove_from_mean(mean: Tensor, removed: Tensor, n: int) -> Tensor:
    """The mean of n values without one of them: (n·mean − removed) / (n − 1)."""
    return (n * mean.float() - removed.float()) / (n - 1)


def is_linearized(tree_config: Mapping[str, Any]) -> bool:
    """Whether a task vector's tree records that it was trained linearized."""
    return str(tree_config.get("metadata", {}).get(LINEARIZED, "")).lower() == "true"
