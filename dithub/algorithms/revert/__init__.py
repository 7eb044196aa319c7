"""Revert algorithms: remove one input's contribution from a merged adapter.

``exact`` is not a tensor function: it replays the recorded merge without the input (see
``dithub.ops.revert``). ``negation`` (task arithmetic's forgetting, arXiv 2212.04089) and ``ntk``
(the same subtraction on linearized task vectors, where it is exact to first order in the
function, after arXiv 2510.13606) are pure functions on tensors.
"""
from .negation import EXACT, LINEARIZED, METHODS, REGISTRY, RevertMethod, is_linearized, negate, remove_from_mean

__all__ = ["EXACT", "LINEARIZED", "METHODS", "REGISTRY", "RevertMethod", "is_linearized", "negate", "remove_from_mean"]
