"""Exact k-th largest magnitude of a tensor, without sorting it.

The magnitude thresholds of TIES, DARE-TIES and Breadcrumbs are order statistics of 10^4-10^8
entries; ``torch.kthvalue`` spends ~20 ns per entry on them. Up to 64K entries on the CPU a radix
select in C (``native.kth_largest_abs_rows``, many tensors in one call), up to 2M numpy's
introselect (``ndarray.partition``, ~1.3 ns per entry) ranks the magnitudes. Larger tensors: a
random sample of 65,536 entries brackets the k-th value with a ±4σ margin on its rank. Large tensors
on the CPU then search the bracket by counting: one native pass counts the entries at or above four
candidate values at once (a reduction: it reads the tensor and writes nothing, ~3 ms per 16M
entries), and the candidates, interpolated from the counts, close in on the float (as bits) whose
count crosses k in about five passes. Elsewhere one pass in cache-sized chunks counts the entries
above the bracket and collects the few inside it, and the answer is the right one of those. Exact
whatever the sample: when the bracket misses (probability < 1e-4, or NaNs), a histogram of the float
bits finds it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import native
from .fused import runs_fused

_SAMPLE = 1 << 16
_CHUNK = {"cpu": 1 << 18}
_CHUNK_DEFAULT = 1 << 24
_HI_BITS = 16
_PARTITION_MAX = 1 << 21
RADIX_MAX = 1 << 16
"""Up to this many entries the CPU ranks by the native radix select (three short passes, ~1.3 ns
per entry and pass in cache, no per-call costs of numpy's): small tensors and Core Space's cores."""


def kth_largest_abs(x: Tensor, k: int) -> Tensor:
    """The k-th largest |x| (1 ≤ k ≤ numel) as a float32 scalar, exactly."""
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    flat = x.detach().reshape(-1)
    if _by_radix(flat):
        return native.kth_largest_abs_rows(flat[None], k)[0]
    if n <= _PARTITION_MAX and flat.device.type == "cpu":
        return _by_partition(flat, k)
    if n <= 16 * _SAMPLE:
        return by_histogram(flat, k)
    lo, hi = _bracket(flat, k)
    if flat.device.type == "cpu" and n < 2**31 and runs_fused(flat):  # plain, each pass would allocate
        found = _by_counting(flat, k, lo, hi)
        return by_histogram(flat, k) if found is None else found
    above = torch.zeros((), dtype=torch.int64, device=flat.device)
    nans = torch.zeros((), dtype=torch.int64, device=flat.device)
    parts = []
    for chunk in flat.split(_CHUNK.get(flat.device.type, _CHUNK_DEFAULT)):
        a = chunk.abs().float()
        above += (a > hi).sum()
        nans += torch.isnan(a).sum()  # NaNs rank above every value (as the histogram ranks them)
        parts.append(a[(a >= lo) & (a <= hi)])
    band = torch.cat(parts)
    rank = k - int(above)
    if int(nans) or not 1 <= rank <= band.numel():
        return by_histogram(flat, k)
    return torch.kthvalue(band, band.numel() - rank + 1).values  # the rank-th largest (3x faster than topk)


def kth_largest_abs_each(xs: Sequence[Tensor], k: int) -> Tensor:
    """``kth_largest_abs(x, k)`` of each of N equally long tensors ([N], float32, on their device):
    small CPU tensors (Core Space's cores) ranked in one radix call, paying its per-call costs once."""
    if not _by_radix(xs[0]):
        return torch.stack([kth_largest_abs(x, k) for x in xs]).to(xs[0].device)
    if not 1 <= k <= xs[0].numel():
        raise ValueError(f"k={k} outside 1..{xs[0].numel()}")
    return native.kth_largest_abs_rows(torch.stack([x.detach().reshape(-1).float() for x in xs]), k)


def _by_radix(flat: Tensor) -> bool:
    return flat.numel() <= RADIX_MAX and flat.device.type == "cpu" and runs_fused(flat)


_MAX_PASSES = 64


def _by_counting(flat: Tensor, k: int, lo: float, hi: float) -> Tensor | None:
    """The k-th largest |x| inside [lo, hi] by counting passes (native: this runs only where the
    native kernels do), or None if the bracket misses. Works on float32 bit patterns, which order
    like the non-negative values: f(u) = #(|x| ≥ u) steps down at each entry's value, and the
    answer is the largest u with f(u) ≥ k. Invariant: f(left) ≥ k > f(right); each pass probes
    four patterns strictly between them."""
    as_float = lambda u: torch.tensor(u, dtype=torch.int32).view(torch.float32)  # noqa: E731
    left = int(torch.tensor(lo, dtype=torch.float32).view(torch.int32))
    right = min(int(torch.tensor(hi, dtype=torch.float32).view(torch.int32)) + 1, 0x7F800001)  # just above hi
    first = native.count_at_least(flat, torch.stack([as_float(left), as_float(right), as_float(0), as_float(left)]))
    f_left, f_right, nans = int(first[0]), int(first[1]), flat.numel() - int(first[2])  # NaN is never ≥ 0
    if nans or not f_left >= k > f_right:
        return None
    for _ in range(_MAX_PASSES):
        if right - left <= 1:
            return as_float(left)
        probes = _probes(left, right, f_left, f_right, k)
        counts = native.count_at_least(flat, torch.stack([as_float(u) for u in probes])).tolist()
        for u, c in zip(probes, counts):
            if c >= k and u > left:
                left, f_left = u, c
            elif c < k and u < right:
                right, f_right = u, c
    return None


def _probes(left: int, right: int, f_left: int, f_right: int, k: int) -> list[int]:
    """Four bit patterns strictly inside (left, right), clustered where the counts interpolate k."""
    span = right - left
    est = left + (f_left - k + 0.5) / max(1, f_left - f_right) * span
    step = max(1.0, span / 32)
    raw = [est - 3 * step, est - step / 2, est + step / 2, est + 3 * step]
    return sorted(min(right - 1, max(left + 1, round(u))) for u in raw)


def _bracket(flat: Tensor, k: int) -> tuple[float, float]:
    """Magnitudes lo ≤ hi that hold the k-th largest between them with high probability."""
    n = flat.numel()
    size = min(_SAMPLE, max(_SAMPLE // 16, n >> 8))  # a smaller sample for a smaller tensor: a wider bracket, cheaper
    g = torch.Generator().manual_seed(n * 31 + k)
    idx = torch.randint(n, (size,), generator=g).to(flat.device)
    sample = flat[idx].abs().float().cpu().numpy()
    q = k / n
    margin = 4.0 * math.sqrt(size * q * (1.0 - q)) + 16
    top, bottom = math.floor(q * size - margin), math.ceil(q * size + margin)
    ranks = [size - r for r in (top, bottom) if 1 <= r <= size]  # ascending positions of the r-th largest
    values = dict(zip(ranks, _partitioned(sample, ranks).tolist()))
    hi = values[size - top] if top >= 1 else math.inf
    lo = values[size - bottom] if bottom <= size else 0.0
    return lo, hi


def _by_partition(flat: Tensor, k: int) -> Tensor:
    """The k-th largest |x| by one introselect of the magnitudes. numpy's slows down 10-20x when
    the k-th position falls in a large block of equal values; zeros are the one such value task
    vectors have (untouched embedding rows, pruned entries, Core Space's triangular cores), so
    when they are many they are dropped first: they rank below every other magnitude."""
    a = flat.abs().float().numpy()
    nonzero = int(np.count_nonzero(a))  # NaN counts: it ranks above every value
    if nonzero < k:
        return torch.zeros((), dtype=torch.float32)
    if nonzero < a.size - (a.size >> 6):
        a = np.compress(a != 0, a)
    return _partitioned(a, [a.size - k])[0]


def _partitioned(values: np.ndarray, positions: list[int]) -> Tensor:
    """The entries that would sit at ``positions`` (0-based, ascending) if ``values`` (a scratch
    float32 array, reordered in place) were sorted; NaNs sort last, as ``torch.sort`` puts them."""
    if positions:
        values.partition(positions)
    return torch.from_numpy(values[positions].copy())


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
