"""mergekit's generalized task arithmetic (TIES, DARE-TIES, Breadcrumbs) at weight 1 per input.

Follows arcee-ai/mergekit 0.1.x, ``mergekit/sparsify.py`` (``magnitude``: the top int(density·n)
entries by an argsort of the magnitudes; ``magnitude_outliers``: drop the top int(gamma·n), keep
the next int(density·n)) and ``mergekit/merge_methods/generalized_task_arithmetic.py``
(``get_mask`` with method "sum": the elected sign is + where the sum is ≥ 0, and an entry agrees
where its sign equals it, so zeros never do; ``normalize``: divide by the number that agree).
mergekit's argsort is not stable; here ties in magnitude go to the lower index (a stable sort),
the rule dithub's ``convention=mergekit`` states. Where density + gamma = 1 mergekit's slice
``sort[n_top:-0]`` keeps nothing; here it keeps the rest, as intended.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _order(x: Tensor) -> Tensor:
    return torch.argsort(x.reshape(-1).abs().double(), descending=True, stable=True)


def magnitude(x: Tensor, density: float) -> Tensor:
    if density >= 1:
        return x
    k = int(density * x.numel())
    mask = torch.zeros(x.numel(), dtype=torch.bool)
    mask[_order(x)[:k]] = True
    return x * mask.reshape(x.shape)


def magnitude_outliers(x: Tensor, density: float, gamma: float) -> Tensor:
    n = x.numel()
    target, top = int(density * n), int(gamma * n)
    bottom = n - target - top
    if bottom < 0:
        top, bottom = top + bottom, 0
    mask = torch.zeros(n, dtype=torch.bool)
    mask[_order(x)[top:n - bottom]] = True
    return x * mask.reshape(x.shape)


def _weights(n: int, weights: list[float] | None) -> Tensor:
    return torch.tensor(weights if weights is not None else [1.0] * n, dtype=torch.float32)


def sign_consensus_mean(deltas: list[Tensor], lam: float = 1.0, weights: list[float] | None = None) -> Tensor:
    """Weighted deltas, the sign of their sum (+ on ≥ 0), and the sum of the agreeing ones divided
    by the sum of their weights (``normalize``)."""
    d = torch.stack([x.float() for x in deltas])
    w = _weights(len(deltas), weights)
    while w.dim() < d.dim():
        w = w.unsqueeze(-1)
    weighted = d * w
    majority = (weighted.sum(dim=0) >= 0).float() * 2 - 1
    mask = weighted.sign() == majority
    mixed = (weighted * mask).sum(dim=0)
    divisor = (w * mask).sum(dim=0)
    divisor[divisor == 0] = 1
    return mixed / divisor * lam


def ties(vectors: list[Tensor], density: float, lam: float = 1.0, weights: list[float] | None = None) -> Tensor:
    return sign_consensus_mean([magnitude(v.float(), density) for v in vectors], lam, weights)


def breadcrumbs(vectors: list[Tensor], beta: float, gamma: float, alpha: float = 1.0,
                weights: list[float] | None = None) -> Tensor:
    """``breadcrumbs`` (no sign consensus, no normalization): α · Σ w_t · (banded input t)."""
    w = _weights(len(vectors), weights)
    return sum(wt * magnitude_outliers(v.float(), beta, gamma) for wt, v in zip(w.tolist(), vectors)) * alpha


def task_arithmetic(vectors: list[Tensor], lam: float = 1.0, weights: list[float] | None = None) -> Tensor:
    """``task_arithmetic``: λ · Σ w_t τ_t."""
    w = _weights(len(vectors), weights)
    return sum(wt * v.float() for wt, v in zip(w.tolist(), vectors)) * lam
