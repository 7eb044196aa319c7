"""Exact k-th largest magnitude of a tensor, without sorting it.

The magnitude thresholds of TIES, DARE-TIES and Breadcrumbs are order statistics
of 10^7-10^8 entries; ``torch.kthvalue`` spends ~20 ns per entry on them. Here a
random sample of 65,536 entries brackets the k-th value with a ±4σ margin on its
rank; one pass in cache-sized chunks counts the entries above the bracket and
collects the few inside it; the answer is the right one of those. Exact whatever
the sample: when the bracket misses (probability < 1e-4, or NaNs), a histogram of
the float bits finds it instead.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_SAMPLE = 1 << 16
_CHUNK = {"cpu": 1 << 18}
_CHUNK_DEFAULT = 1 << 24
_HI_BITS = 16


def kth_largest_abs(x: Tensor, k: int) -> Tensor:
    """The k-th largest |x| (1 ≤ k ≤ numel) as a float32 scalar, exactly."""
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    flat = x.detach().reshape(-1)
    if n <= 16 * _SAMPLE:
        return by_histogram(flat, k)
    lo, hi = _bracket(flat, k)
    above = torch.zeros((), dtype=torch.int64, device=flat.device)
    parts = []
    for chunk in flat.split(_CHUNK.get(flat.device.type, _CHUNK_DEFAULT)):
        a = chunk.abs().float()
        above += (a > hi).sum()
        parts.append(a[(a >= lo) & (a <= hi)])
    band = torch.cat(parts)
    rank = k - int(above)
    if not 1 <= rank <= band.numel():
        return by_histogram(flat, k)
    return torch.kthvalue(band, band.numel() - rank + 1).values  # the rank-th largest (3x faster than topk)


def _bracket(flat: Tensor, k: int) -> tuple[float, float]:
    """Magnitudes lo ≤ hi that hold the k-th largest between them with high probability."""
    n = flat.numel()
    g = torch.Generator().manual_seed(n * 31 + k)
    idx = torch.randint(n, (_SAMPLE,), generator=g).to(flat.device)
    sample = flat[idx].abs().float().sort(descending=True).values
    q = k / n
    margin = 4.0 * math.sqrt(_SAMPLE * q * (1.0 - q)) + 16
    top, bottom = math.floor(q * _SAMPLE - margin), math.ceil(q * _SAMPLE + margin)
    hi = float(sample[top - 1]) if top >= 1 else math.inf
    lo = float(sample[bottom - 1]) if bottom <= _SAMPLE else 0.0
    return lo, hi


def by_histogram(flat: Tensor, k: int) -> Tensor:
    """The k-th largest |x| from a histogram of the top 16 bits of |x| as float32.

    |x|'s float32 bits, read as int32, order like the values, so one bincount
    finds the bucket of the k-th value and only that bucket is ranked.
    """
    bits = flat.abs().float().view(torch.int32)
    hi = bits >> _HI_BITS
    counts = torch.bincount(hi, minlength=1 << (31 - _HI_BITS))
    from_top = counts.flip(0).cumsum(0)
    idx = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype, device=from_top.device)))
    bucket = counts.numel() - 1 - idx
    above = int(from_top[idx]) - int(counts[bucket])
    members = bits[hi == bucket]
    return torch.topk(members, k - above).values[-1].view(torch.float32)
