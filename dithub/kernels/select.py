"""Exact k-th largest magnitude of a tensor, without sorting it.

On the CPU the tensor's memory goes to ``rank`` (numpy and the C kernels: a radix select, an
introselect, or counting passes inside a sampled bracket). Elsewhere (a GPU) the same sample brackets
the k-th value, one pass in cache-sized chunks counts the entries above the bracket and collects the
few inside it, and the answer is the right one of those; when the bracket misses (or there are NaNs)
a histogram of the float bits finds it. Exact whatever the sample, on every path.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import rank

_CHUNK = 1 << 24
_HI_BITS = 16


def kth_largest_abs(x: Tensor, k: int) -> Tensor:
    """The k-th largest |x| (1 ≤ k ≤ numel) as a float32 scalar, exactly."""
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    flat = x.detach().reshape(-1)
    if flat.device.type == "cpu":
        return torch.tensor(rank.kth_largest_abs(flat.float().contiguous().numpy(), k))
    if n <= 16 * rank.SAMPLE:
        return by_histogram(flat, k)
    idx = torch.from_numpy(rank.sample_indices(n, k)).to(flat.device)
    lo, hi = rank.bracket(flat[idx].abs().float().cpu().numpy(), n, k)
    above = torch.zeros((), dtype=torch.int64, device=flat.device)
    nans = torch.zeros((), dtype=torch.int64, device=flat.device)
    parts = []
    for chunk in flat.split(_CHUNK):
        a = chunk.abs().float()
        above += (a > hi).sum()
        nans += torch.isnan(a).sum()  # NaNs rank above every value (as the histogram ranks them)
        parts.append(a[(a >= lo) & (a <= hi)])
    band = torch.cat(parts)
    rank_in_band = k - int(above)
    if int(nans) or not 1 <= rank_in_band <= band.numel():
        return by_histogram(flat, k)
    return torch.kthvalue(band, band.numel() - rank_in_band + 1).values  # the rank-th largest (3x faster than topk)


def kth_largest_abs_each(xs: Sequence[Tensor], k: int) -> Tensor:
    """``kth_largest_abs(x, k)`` of each of N equally long tensors ([N], float32, on their device):
    small CPU tensors (Core Space's cores) ranked in one radix call, paying its per-call costs once."""
    if xs[0].device.type != "cpu":
        return torch.stack([kth_largest_abs(x, k) for x in xs]).to(xs[0].device)
    return torch.from_numpy(rank.kth_largest_abs_each([x.detach().reshape(-1).float().contiguous().numpy() for x in xs], k))


def by_histogram(flat: Tensor, k: int) -> Tensor:
    """The k-th largest |x| from a histogram of the top 16 bits of |x| as float32: |x|'s float32
    bits, read as int32, order like the values, so one bincount finds the bucket of the k-th value
    and only that bucket is ranked."""
    bits = flat.abs().float().view(torch.int32)
    hi = bits >> _HI_BITS
    counts = torch.bincount(hi, minlength=1 << (31 - _HI_BITS))
    from_top = counts.flip(0).cumsum(0)
    idx = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype, device=from_top.device)))
    bucket = counts.numel() - 1 - idx
    above = int(from_top[idx]) - int(counts[bucket])
    members = bits[hi == bucket]
    return torch.topk(members, k - above).values[-1].view(torch.float32)
