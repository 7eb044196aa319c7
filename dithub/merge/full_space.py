"""Full-space merges of task vectors, one weight tensor at a time.

Trimming and thresholds are per tensor (as mergekit does), which is what lets
a merge stream a model tensor by tensor; the papers state them per model.
The executor applies these to tensors of two or more dimensions; 1-D tensors
(biases, norms) are averaged whatever the method. LoRA inputs are expanded to
ΔW = s·B@A first (the result is a task vector).

* ``task_arithmetic`` — Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089:
  α · Σ τ_t. Default α = 0.3 (fusion_bench's scaling factor).
* ``ties`` — Yadav et al., "TIES-Merging", arXiv 2306.01708: trim each τ_t to its top-k% magnitudes
  (k = 20), elect the sign of the summed mass, average the entries that agree, scale by λ = 1.
* ``dare`` — Yu et al., "Language Models are Super Mario", arXiv 2311.03099: drop entries with
  probability p = 0.9, rescale by 1/(1−p), then combine by task arithmetic (``combine='ta'``, λ = 1)
  or TIES' sign election and disjoint mean (``combine='ties'``). Seeded per tensor.
* ``breadcrumbs`` — Davari & Belilovsky, "Model Breadcrumbs", arXiv 2312.06795: per τ_t, drop the
  top γ = 1% magnitudes (outliers) and keep the next β = 10% (so the mask keeps ranks γ..γ+β),
  then α · Σ (default α = 0.3).
* ``magmax`` — Marczak et al., "MagMax", arXiv 2407.06322: per entry, the input value of largest
  magnitude, scaled by α = 1.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import BadInput
from .primitives import dare_drop, disjoint_mean, elect_sign, kth_largest_abs, tensor_seed, trim
from .registry import register


def _stack(vectors: Sequence[Tensor]) -> Tensor:
    if not vectors:
        raise BadInput("a merge needs at least one input")
    return torch.stack([v.float() for v in vectors])


@register("task_arithmetic", paper="2212.04089", defaults={"alpha": 0.3})
def task_arithmetic(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    return alpha * _stack(vectors).sum(0)


@register("ties", paper="2306.01708", defaults={"density": 0.2, "lam": 1.0})
def ties(vectors: Sequence[Tensor], *, density: float, lam: float) -> Tensor:
    trimmed = [trim(v, density) for v in _stack(vectors)]
    return lam * disjoint_mean(trimmed, elect_sign(trimmed))


@register("dare", paper="2311.03099", defaults={"p": 0.9, "combine": "ta", "lam": 1.0, "seed": 0})
def dare(vectors: Sequence[Tensor], *, p: float, combine: str, lam: float, seed: int, key: str) -> Tensor:
    if combine not in ("ta", "ties"):
        raise BadInput(f"dare: combine must be 'ta' or 'ties', got {combine!r}")
    if not 0.0 <= p < 1.0:
        raise BadInput(f"dare: p must be in [0, 1), got {p}")
    dropped = [dare_drop(v, p, tensor_seed(seed, key, i)) for i, v in enumerate(_stack(vectors))]
    if combine == "ta":
        return lam * torch.stack(dropped).sum(0)
    return lam * disjoint_mean(dropped, elect_sign(dropped))


@register("breadcrumbs", paper="2312.06795", defaults={"beta": 0.1, "gamma": 0.01, "alpha": 0.3})
def breadcrumbs(vectors: Sequence[Tensor], *, beta: float, gamma: float, alpha: float) -> Tensor:
    if not (0 <= gamma < 1 and 0 < beta <= 1 - gamma):
        raise BadInput(f"breadcrumbs: need 0 <= gamma < 1 and 0 < beta <= 1 - gamma (got beta={beta}, gamma={gamma})")
    out = []
    for v in _stack(vectors):
        a, n = v.abs(), v.numel()
        top = round(gamma * n)
        keep_to = min(n, max(top + 1, round((gamma + beta) * n)))
        low = kth_largest_abs(v, keep_to)
        high = kth_largest_abs(v, top) if top > 0 else torch.tensor(float("inf"))
        mask = (a >= low) & (a < high) if top > 0 else a >= low
        out.append(torch.where(mask, v, torch.zeros_like(v)))
    return alpha * torch.stack(out).sum(0)


@register("magmax", paper="2407.06322", defaults={"alpha": 1.0})
def magmax(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    stacked = _stack(vectors)
    idx = stacked.abs().argmax(0, keepdim=True)
    return alpha * stacked.gather(0, idx).squeeze(0)
