"""Defences applied to a merge's result: ``ibvs`` (Injection Backdoor-Vector Subtraction, arXiv
2510.08016), a pure function on tensors; the operation that applies it is ``ops.merge.defend``."""
from .ibvs import REGISTRY, DefenseMethod, ibvs

__all__ = ["REGISTRY", "DefenseMethod", "ibvs"]
