"""Shared pieces of the sparsifying merges (after mergekit's decomposition):
magnitude thresholds, trimming, random drops, sign election, disjoint means."""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

_HI_BITS = 16


def kth_largest_abs(x: Tensor, k: int) -> Tensor:
    """The k-th largest |x| (1 ≤ k ≤ numel), exactly, without a full sort.

    |x| as float32 bits is a non-negative int32 whose order is the value order,
    so a histogram of the top 16 bits finds the bucket holding the k-th value
    in one pass; only that bucket's few members are then ranked exactly.
    """
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    bits = x.detach().reshape(-1).abs().float().view(torch.int32)
    hi = bits >> _HI_BITS
    counts = torch.bincount(hi, minlength=1 << (31 - _HI_BITS))
    from_top = counts.flip(0).cumsum(0)
    idx = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype)))
    bucket = counts.numel() - 1 - idx
    above = int(from_top[idx]) - int(counts[bucket])
    members = bits[hi == bucket]
    value_bits = torch.topk(members, k - above).values[-1]
    return value_bits.view(torch.float32)


def trim(x: Tensor, density: float) -> Tensor:
    """Keep the top ``density`` fraction of entries by magnitude (ties at the threshold kept), zero the rest."""
    if density >= 1.0:
        return x
    k = max(1, round(density * x.numel())) if density > 0 else 0
    if k == 0:
        return torch.zeros_like(x)
    return torch.where(x.abs() >= kth_largest_abs(x, k).to(x.dtype), x, torch.zeros_like(x))


def tensor_seed(seed: int, key: str, index: int) -> int:
    """A seed for input ``index`` of tensor ``key``, fixed by the recorded ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(key.encode()) * 31 + index) % (2**63 - 1)


def dare_drop(x: Tensor, p: float, seed: int) -> Tensor:
    """Drop each entry with probability p, rescale survivors by 1/(1−p) (unbiased)."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    g = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same mask on every device
    keep = (torch.rand(x.shape, generator=g) >= p).to(x.device)
    return torch.where(keep, x / (1.0 - p), torch.zeros_like(x))


def elect_sign(vectors: Sequence[Tensor]) -> Tensor:
    """TIES' sign election: the sign of the summed mass (+1 where the sum is 0)."""
    total = torch.stack(list(vectors)).sum(0)
    return torch.where(total >= 0, 1.0, -1.0).to(total.dtype)


def disjoint_mean(vectors: Sequence[Tensor], sign: Tensor) -> Tensor:
    """Mean over inputs of the non-zero entries that agree with ``sign``."""
    stacked = torch.stack(list(vectors))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(0).clamp(min=1)
    return (stacked * agree).sum(0) / count
