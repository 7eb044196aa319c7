"""GradFix: keep the entries of an update that descend the new base's loss.

Rinaldi et al., "Gradient-Sign Masking for Task Vector Transport Across Pre-Trained Models",
arXiv 2510.09658 (reference code: fillo-rinaldi/GradFix). With a handful of labelled samples, one
backward pass per sample at the new base θ_new (no parameter update) gives g = sign(−∇L(θ_new))
by a per-sample majority vote (the reference's ``vote="max"``); the transported update keeps the
entries of τ whose sign agrees with g and zeroes the rest (``mask_mode="normal"``):
θ_new + α (m ⊙ τ), m = [sign(τ) = g]. The masked update has a non-positive inner product with
∇L(θ_new) entry by entry, hence first-order descent. Defaults: the executor votes over the first
``samples`` = 64 probe samples; α = 1 (``--alpha``; ``--alpha auto`` sweeps it on the probe).
A LoRA update becomes a dense task vector (a masked B@A is not low-rank); tensors without a
gradient sign (not trained at the new base) are kept whole.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..params import Range
from .registry import RebaseContext, Transport, as_float, register_rebase


def majority_sign(per_sample_signs: Tensor) -> Tensor:
    """The sign most samples give each entry (0 on a tie); ``per_sample_signs`` stacks samples first."""
    return torch.sign(per_sample_signs.sum(0))


def gradfix_mask(tau: Tensor, descent_sign: Tensor) -> Tensor:
    """τ where its sign equals the descent direction's, 0 elsewhere."""
    return torch.where(torch.sign(tau) == descent_sign.to(tau.device), tau, torch.zeros((), dtype=tau.dtype))


class SignMask(Transport):
    def __init__(self, signs: dict[str, Tensor]) -> None:
        self.signs = signs

    def dense(self, key: str, delta: Tensor) -> Tensor:
        sign = self.signs.get(key)
        return delta if sign is None else gradfix_mask(as_float(delta), sign.reshape(delta.shape))

    def factors(self, key: str, a: Tensor, b: Tensor) -> None:
        return None


@register_rebase("gradfix", paper="2510.09658", defaults={"samples": 64}, needs="labels", ranges={"samples": Range(1, None)})
def gradfix(ctx: RebaseContext, *, samples: int) -> Transport:
    """Mask the update by the per-sample majority sign of −∇L at the new base."""
    assert ctx.grad_signs is not None, "the executor computes gradient signs for methods that need labels"
    return SignMask(ctx.grad_signs)
