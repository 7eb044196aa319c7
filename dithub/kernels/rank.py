"""Exact k-th largest magnitude of a float32 array on the CPU, without sorting it and without torch.

The magnitude thresholds of TIES, DARE-TIES and Breadcrumbs are order statistics of 10^4-10^8
entries; ``torch.kthvalue`` spends ~20 ns per entry on them, numpy's introselect
(``ndarray.partition``) 6-10 ns on task-vector-like values (measured; it ranks only where the C
kernels are not built). Up to 128K entries a radix select in C (``clib.kth_largest_abs_rows``, many
arrays in one call, ~2.5 ns per entry). Larger arrays: a random sample of up to 65,536 entries
brackets the k-th value with a ±4σ margin on its rank, and the bracket is searched by counting
(0.8-1.7 ns per entry from 600K entries on): one C pass counts the entries at or above four candidate values at once (a reduction: it
reads the array and writes nothing, ~3 ms per 16M entries), and the candidates, interpolated from the
counts, close in on the float (as bits) whose count crosses k in about five passes. Exact whatever
the sample: when the bracket misses (probability < 1e-4, or NaNs), a histogram of the float bits
finds it. ``select`` applies this to CPU tensors and does the same with torch elsewhere.
"""
from __future__ import annotations

import math

import numpy as np

from . import clib

SAMPLE = 1 << 16
_HI_BITS = 16
RADIX_MAX = 1 << 17
"""Up to this many entries the radix select runs (three short passes in cache, none of the counting
search's per-call costs): small tensors and Core Space's cores; above, counting is faster (measured:
2.5 ns per entry against 2.5 at 200K, 1.6 at 300K, 0.8 at 1.5M)."""
_MAX_PASSES = 64


def kth_largest_abs(a: np.ndarray, k: int) -> np.float32:
    """The k-th largest |a| (1 ≤ k ≤ a.size) of a flat float32 array, exactly; NaNs rank above
    every value. Without the C kernels (or under ``DITHUB_KERNELS=plain``) numpy's introselect
    ranks every size."""
    n = a.size
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside 1..{n}")
    native = _native()
    if n <= RADIX_MAX and native:
        return clib.kth_largest_abs_rows(np.ascontiguousarray(a).reshape(1, n), k)[0]
    if not native or n >= 2**31:
        return by_partition(a, k)
    lo, hi = bracket(np.abs(a[sample_indices(n, k)]), n, k)
    found = _by_counting(np.ascontiguousarray(a), k, lo, hi)
    return by_histogram(a, k) if found is None else found


def kth_largest_abs_each(rows: list[np.ndarray], k: int) -> np.ndarray:
    """``kth_largest_abs`` of each of N equally long flat arrays ([N] float32): small ones in one radix call."""
    if rows[0].size <= RADIX_MAX and _native():
        if not 1 <= k <= rows[0].size:
            raise ValueError(f"k={k} outside 1..{rows[0].size}")
        return clib.kth_largest_abs_rows(np.stack(rows), k)
    return np.array([kth_largest_abs(r, k) for r in rows], dtype=np.float32)


def _native() -> bool:
    return clib.enabled() and clib.available()


def by_partition(a: np.ndarray, k: int) -> np.float32:
    """The k-th largest |a| by one introselect of the magnitudes. numpy's slows down 10-20x when
    the k-th position falls in a large block of equal values; zeros are the one such value task
    vectors have (untouched embedding rows, pruned entries, Core Space's triangular cores), so
    when they are many they are dropped first: they rank below every other magnitude."""
    m = np.abs(a)
    nonzero = int(np.count_nonzero(m))  # NaN counts: it ranks above every value
    if nonzero < k:
        return np.float32(0.0)
    if nonzero < m.size - (m.size >> 6):
        m = np.compress(m != 0, m)
    return partitioned(m, [m.size - k])[0]


def partitioned(values: np.ndarray, positions: list[int]) -> np.ndarray:
    """The entries that would sit at ``positions`` (0-based, ascending) if ``values`` (a scratch
    float32 array, reordered in place) were sorted; NaNs sort last, as ``torch.sort`` puts them."""
    if positions:
        values.partition(positions)
    return values[positions].copy()


def sample_indices(n: int, k: int) -> np.ndarray:
    """Where ``bracket``'s sample is read: a smaller sample for a smaller array (a wider bracket, cheaper)."""
    size = min(SAMPLE, max(SAMPLE // 16, n >> 8))
    return np.random.default_rng(n * 31 + k).integers(0, n, size)


def bracket(sample: np.ndarray, n: int, k: int) -> tuple[float, float]:
    """Magnitudes lo ≤ hi that hold the k-th largest of n between them with high probability, from
    a uniform ``sample`` of the magnitudes (a float32 scratch array, reordered)."""
    size = sample.size
    q = k / n
    margin = 4.0 * math.sqrt(size * q * (1.0 - q)) + 16
    top, bottom = math.floor(q * size - margin), math.ceil(q * size + margin)
    ranks = [size - r for r in (top, bottom) if 1 <= r <= size]  # ascending positions of the r-th largest
    values = dict(zip(ranks, partitioned(sample, ranks).tolist()))
    hi = values[size - top] if top >= 1 else math.inf
    lo = values[size - bottom] if bottom <= size else 0.0
    return lo, hi


def _as_float(u: int) -> float:
    return float(np.array(u, dtype=np.int32).view(np.float32))


def _as_bits(v: float) -> int:
    return int(np.array(v, dtype=np.float32).view(np.int32))


def _by_counting(a: np.ndarray, k: int, lo: float, hi: float) -> np.float32 | None:
    """The k-th largest |a| inside [lo, hi] by counting passes, or None if the bracket misses. Works
    on float32 bit patterns, which order like the non-negative values: f(u) = #(|a| ≥ u) steps down
    at each entry's value, and the answer is the largest u with f(u) ≥ k. Invariant: f(left) ≥ k >
    f(right); each pass probes four patterns strictly between them."""
    left, right = _as_bits(lo), min(_as_bits(hi) + 1, 0x7F800001)  # right: just above hi
    first = np.zeros(4, dtype=np.int64)
    clib.count_at_least(a, [_as_float(left), _as_float(right), 0.0, _as_float(left)], first)
    f_left, f_right, nans = int(first[0]), int(first[1]), a.size - int(first[2])  # NaN is never ≥ 0
    if nans or not f_left >= k > f_right:
        return None
    for _ in range(_MAX_PASSES):
        if right - left <= 1:
            return np.float32(_as_float(left))
        probes = _probes(left, right, f_left, f_right, k)
        counts = np.zeros(4, dtype=np.int64)
        clib.count_at_least(a, [_as_float(u) for u in probes], counts)
        for u, c in zip(probes, counts.tolist()):
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


def by_histogram(a: np.ndarray, k: int) -> np.float32:
    """The k-th largest |a| from a histogram of the top 16 bits of |a| as float32: the bits, read as
    int32, order like the values, so one bincount finds the bucket of the k-th value and only that
    bucket is ranked."""
    bits = np.abs(a).view(np.int32)
    hi = bits >> _HI_BITS
    counts = np.bincount(hi, minlength=1 << (31 - _HI_BITS))
    from_top = np.cumsum(counts[::-1])
    idx = int(np.searchsorted(from_top, k))
    bucket = counts.size - 1 - idx
    above = int(from_top[idx]) - int(counts[bucket])
    members = bits[hi == bucket]
    rank = k - above  # the rank-th largest of the bucket's members
    return np.float32(partitioned(members, [members.size - rank]).view(np.float32)[0])
