"""Injection Backdoor-Vector Subtraction (IBVS) — Pawlak, Dubiński, Marczak, Twardowski, "Backdoor
Vectors: a Task Arithmetic View on Backdoor Attacks and Defenses", arXiv 2510.08016.

A *backdoor vector* is BV = θ_backdoored − θ_clean: the weights a poisoned fine-tune adds over a
clean one of the same task. The paper finds that backdoors in merged models exploit *inherent
triggers* of the shared base, so the BVs of different triggers share directions; the defender, who
knows nothing of the attack, injects a simple trigger of its own into a clean fine-tune, measures
that BV (the *injected* vector) and subtracts it from the merge:

    θ_defended = θ_merged − scale · BV_injected.

dithub applies the subtraction to the merge's result (``merge --defend ibvs --defense-vector REF``),
every tensor the vector holds; making the injected vector is training, which the defender does
outside dithub (the demo's ``dithub_demo.backdoor`` does it on the digits suite).

Default: ``scale`` = 1 (the vector as measured). The paper's value, and whether it subtracts before
or after merging, could not be read here (its text past the abstract and summaries was not
available, and no code was found); docs/benchmarks.md reports the defence at several scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..params import NATURAL, Algorithm, Registry

if TYPE_CHECKING:
    from torch import Tensor


def ibvs(merged: Tensor, injected: Tensor, *, scale: float) -> Tensor:
    """θ_merged − scale · BV_injected for one tensor (in fp32)."""
    return merged.float() - scale * injected.float()


@dataclass(frozen=True)
class DefenseMethod(Algorithm):
    """A defence on a merge's result: ``fn(merged, vector, **params)`` on one tensor."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"subtracts"})


REGISTRY: Registry[DefenseMethod] = Registry("defense")
REGISTRY.add(DefenseMethod("ibvs", ibvs, "2510.08016", defaults={"scale": 1.0}, ranges={"scale": NATURAL}))
