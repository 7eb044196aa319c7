"""The elementwise merge methods on numpy arrays, without torch (issue 24): task arithmetic, TIES,
DARE (``rng='philox'``), Breadcrumbs and MagMax of task vectors, and LoRA's concat and mean_ba. The
papers, defaults and conventions are ``full_space``'s and ``lora_space``'s (arXiv 2212.04089,
2306.01708, 2311.03099, 2312.06795, 2407.06322, 2106.09685, 2503.09271); these compute the same
bits as those torch functions on the CPU (tested against them), so a merge recorded by either
replays identically on the other. Inputs are flat float32 arrays (exact conversions of the stored
tensors); the fused passes are the same C loops (``kernels.clib``) the torch functions call.

Bit-identity, operation by operation: torch adds in float32; ``add_(x, alpha=w)`` is a fused
multiply-add on the CPU, which computing in float64 and rounding once to float32 reproduces (the
product of two float32 is exact in float64; measured equal on 1M entries where numpy's separate
multiply and add differ in 18%); a Python float in a float32 expression is cast to float32, as
torch casts it; elementwise float32 operations round alike (IEEE).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...kernels import clib, rank
from .registry import REGISTRY, check_weights
from .rules import DARE_CHUNK, band_ranks, dare_limit, fixed_threshold, tensor_seed, trim_rank

Weights = Sequence[float] | None
Stats = np.ndarray
NEEDS_C = ("ties", "dare", "breadcrumbs")
"""Methods whose passes here are the C kernels (without them, the torch functions run)."""


def _f(value: float) -> float:
    """A Python float as torch casts it into a float32 expression."""
    return float(np.float32(value))


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    """``factor * x`` as torch computes a Python float times a float32 tensor: the factor cast to
    float32, the product rounded once (IEEE's float32 multiply)."""
    return x * np.float32(factor)


def _scale(x: np.ndarray, factor: float) -> np.ndarray:
    """``_scaled``, in place on ``x`` when it is a writeable float32 array (a fresh result)."""
    if not x.flags.writeable or x.dtype != np.float32:
        return _scaled(x, factor)
    x *= np.float32(factor)
    return x


@np.errstate(over="ignore", invalid="ignore")  # infinities and NaN propagate as in torch, silently
def running_sum(xs: Sequence[np.ndarray], weights: Weights) -> np.ndarray:
    """Σ xs in order (with ``weights``, Σ w_t x_t as ``primitives.running_sum``: a fused
    multiply-add per input after the first)."""
    if weights is None:
        total = np.add(xs[0], xs[1]) if len(xs) > 1 else xs[0].copy()  # one pass for the first two
        for x in xs[2:]:
            total += x
    else:
        total = _scaled(xs[0], weights[0])
        for x, w in zip(xs[1:], weights[1:]):  # a fused multiply-add, rounded once
            total = (total.astype(np.float64) + _f(w) * x.astype(np.float64)).astype(np.float32)
    return torch_nans(total, xs)


def torch_nans(total: np.ndarray, terms: Sequence[np.ndarray]) -> np.ndarray:
    """``total`` (a sum of ``terms`` in order) with the NaNs torch's CPU additions give: where terms
    are NaN, the last one's, quieted (torch's add propagates the NaN added; numpy's loops propagate
    either operand's, by position). A NaN no term held (∞ − ∞) is the machine's default on both."""
    if len(terms) < 2 or not total.size or not np.isnan(np.max(total)):  # max: NaN if any is, in one quick pass
        return total
    where = np.flatnonzero(np.isnan(total))
    last = np.full(where.size, np.nan, dtype=np.float32)
    held = np.zeros(where.size, dtype=bool)
    for t in terms:
        values = t[where]
        nan = np.isnan(values)
        last[nan], held = values[nan], held | nan
    total[where[held]] = (last[held].view(np.uint32) | np.uint32(0x00400000)).view(np.float32)
    return total


def task_arithmetic(xs: Sequence[np.ndarray], *, alpha: float, weights: Weights) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return _scale(running_sum(xs, weights), alpha)


@np.errstate(over="ignore", invalid="ignore")
def magmax(xs: Sequence[np.ndarray], *, alpha: float, tie: str) -> np.ndarray:
    best = xs[0]
    for x in xs[1:]:
        a, b = np.abs(x), np.abs(best)
        best = np.where((a > b) | ((a == b) & (tie == "later")), x, best)
    return _scaled(best, alpha)


def top_mask(x: np.ndarray, k: int, threshold: float | None = None) -> np.ndarray:
    """The k entries of largest magnitude (exactly k; ties at the k-th go to the lower index):
    ``primitives.top_mask``."""
    if k <= 0:
        return np.zeros(x.size, dtype=bool)
    if k >= x.size:
        return np.ones(x.size, dtype=bool)
    t = rank.kth_largest_abs(x, k) if threshold is None else np.float32(threshold)
    magnitude = np.abs(x)
    keep = magnitude > t
    need = k - int(keep.sum())
    keep[np.flatnonzero(magnitude == t)[:max(0, need)]] = True
    return keep


def _thresholds(xs: Sequence[np.ndarray], density: float, convention: str) -> list[float]:
    """``primitives.magnitude_thresholds``."""
    k = trim_rank(xs[0].size, density, convention) if density < 1.0 else 0
    value = fixed_threshold(density, k)
    if value is not None:
        return [value] * len(xs)
    return rank.kth_largest_abs_each(list(xs), k).tolist()


def _trimmed(xs: Sequence[np.ndarray], density: float, convention: str) -> tuple[list[np.ndarray], list[float]]:
    """``primitives.trimmed``: each input keeps its entries ≥ its threshold (under ``mergekit``,
    exactly int(density·n) of them)."""
    thresholds = _thresholds(xs, density, convention)
    if convention != "mergekit" or not 0.0 < density < 1.0:
        return list(xs), thresholds
    k, out = trim_rank(xs[0].size, density, convention), []
    for i, x in enumerate(xs):
        if k == 0 or int((np.abs(x) >= thresholds[i]).sum()) == k:
            out.append(x)
            continue
        out.append(np.where(top_mask(x, k, thresholds[i]), x, np.float32(0.0)))
        thresholds[i] = 0.0
    return out, thresholds


@np.errstate(over="ignore", invalid="ignore")
def sign_mean(values: Sequence[np.ndarray], lam: float, zero_positive: bool, weights: Sequence[float]) -> tuple[np.ndarray, Stats]:
    """``full_space._sign_mean`` with per-input weights (the unweighted one is the C kernel's)."""
    values = [_scaled(v, w) for v, w in zip(values, weights)]
    total = values[0]
    for v in values[1:]:
        total = total + v
    positive = (total > 0) | ((total == 0) & zero_positive)
    num = np.zeros_like(total)
    count = np.zeros_like(total)
    den = np.zeros_like(total)
    for v, w in zip(values, weights):
        agree = np.where(positive, v > 0, v < 0)
        num = num + np.where(agree, v, np.float32(0.0))
        count = count + agree.astype(np.float32)
        den = den + np.where(agree, np.float32(w), np.float32(0.0))
    divisor = np.where(den == 0, np.float32(1.0), den)
    stats = np.array([(total > 0).sum(), (total < 0).sum(), ((total == 0) & (count > 0)).sum()], dtype=np.int64)
    return num / divisor * np.float32(lam), stats


def undecided(stats: Stats) -> bool:
    """Whether the TIES authors' majority rule changes a merge elected with + on zero sums."""
    return int(stats[2]) > 0 and not int(stats[0]) > int(stats[1])


def ties(xs: Sequence[np.ndarray], *, density: float, lam: float, convention: str, weights: Weights) -> np.ndarray:
    kept, thresholds = _trimmed(xs, density, convention)

    def elect(zero_positive: bool) -> tuple[np.ndarray, Stats]:
        if weights is None:
            return clib.ties(kept, thresholds, lam, zero_positive)
        with np.errstate(invalid="ignore"):
            trimmed = [np.where(np.abs(x) >= t, x, np.float32(0.0)) for x, t in zip(kept, np.array(thresholds, dtype=np.float32))]
        return sign_mean(trimmed, lam, zero_positive, weights)

    out, stats = elect(True)
    if convention == "paper" and undecided(stats):
        out, _ = elect(False)
    return out


def breadcrumbs(xs: Sequence[np.ndarray], *, beta: float, gamma: float, alpha: float, convention: str, weights: Weights) -> np.ndarray:
    top, bottom = band_ranks(xs[0].size, beta, gamma, convention)
    if convention == "mergekit":
        xs = [np.where(top_mask(x, bottom) & ~top_mask(x, top), x, np.float32(0.0)) for x in xs]
        lows, highs = [0.0] * len(xs), [float("inf")] * len(xs)
    else:
        lows = [float(rank.kth_largest_abs(x, bottom)) if bottom > top else float("inf") for x in xs]
        highs = [float(rank.kth_largest_abs(x, top)) if top > 0 else float("inf") for x in xs]
    if weights is None:
        return clib.band(xs, lows, highs, _f(alpha))
    with np.errstate(invalid="ignore"):
        banded = [np.where((np.abs(x) >= np.float32(lo)) & (np.abs(x) < np.float32(hi)), x, np.float32(0.0))
                  for x, lo, hi in zip(xs, lows, highs)]
    return task_arithmetic(banded, alpha=alpha, weights=weights)


def dare(xs: Sequence[np.ndarray], *, p: float, combine: str, lam: float, seed: int, mask: str, rng: str, convention: str,
         key: str, weights: Weights) -> np.ndarray:
    """DARE with ``rng='philox'`` (``mask='uint16'``): the draws are Philox's, computed in C."""
    if rng != "philox" or mask != "uint16":
        raise ValueError("the numpy DARE draws from Philox (rng=philox, mask=uint16) only")
    limit, keep_prob = dare_limit(p, mask)
    key_seed, n = tensor_seed(seed, key, 0), xs[0].size
    majority = combine == "ties" and convention == "paper"
    out = np.empty(n, dtype=np.float32)
    stats = np.zeros(3, dtype=np.int64)
    fixes: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, n, DARE_CHUNK):
        stop = min(n, start + DARE_CHUNK)
        part = [x[start:stop] for x in xs]
        draws = [clib.philox_draws(key_seed, start, stop - start, i) for i in range(len(xs))]
        merged, part_stats = _dare_chunk(part, draws, limit, keep_prob, lam, combine, weights, True, out[start:stop])
        if majority:
            stats += part_stats
            if int(part_stats[2]):  # rare: decide both ways while the draws are at hand
                other, _ = _dare_chunk(part, draws, limit, keep_prob, lam, combine, weights, False, None)
                entries = np.flatnonzero(other != merged)
                fixes.append((entries + start, other[entries]))
    if fixes and undecided(stats):
        for entries, values in fixes:
            out[entries] = values
    return out


@np.errstate(over="ignore", invalid="ignore")
def _dare_chunk(xs: list[np.ndarray], draws: list[np.ndarray], limit: int, keep_prob: float, lam: float, combine: str,
                weights: Weights, zero_positive: bool, out: np.ndarray | None) -> tuple[np.ndarray, Stats]:
    """``full_space.dare_chunk``: DARE's keep-rescale-combine over one chunk (into ``out`` when given)."""
    no_stats = np.zeros(3, dtype=np.int64)
    if weights is None:
        if combine == "ta":
            return clib.dare_ta(xs, draws, limit, keep_prob, lam, out), no_stats
        return clib.dare_ties(xs, draws, limit, keep_prob, lam, zero_positive, out)
    kept = [np.where(d <= limit, x / np.float32(keep_prob), np.float32(0.0)) for x, d in zip(xs, draws)]
    merged, stats = (task_arithmetic(kept, alpha=lam, weights=weights), no_stats) if combine == "ta" else \
        sign_mean(kept, lam, zero_positive, weights)
    if out is not None:
        out[:] = merged
    return (merged if out is None else out), stats


METHODS: dict[str, Any] = {"task_arithmetic": task_arithmetic, "ties": ties, "dare": dare, "breadcrumbs": breadcrumbs,
                           "magmax": magmax}
"""The full-space methods computed here (``dare`` with ``rng='philox'`` only)."""


def merge(method: str, xs: Sequence[np.ndarray], params: dict[str, Any], *, key: str, weights: Weights) -> np.ndarray:
    """``method`` on flat float32 inputs with its full ``params``, called as the registry calls the
    torch function (``MergeMethod.__call__``: ``key`` for random methods, checked ``weights``)."""
    declared = REGISTRY[method]
    extra: dict[str, Any] = {"key": key} if declared.random else {}
    if declared.weighted:
        extra["weights"] = check_weights(declared, weights, len(xs))
    return METHODS[method](xs, **params, **extra)


Factors = list[tuple[np.ndarray, np.ndarray, float]]
"""Per input (A, B, scaling) of one LoRA module, as float32 matrices."""


def concat(factors: Factors, *, alpha: float, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    each = weights if weights is not None else [1.0] * len(factors)
    return (np.concatenate([_scaled(a, alpha * w * s) for (a, _b, s), w in zip(factors, each)], axis=0),
            np.concatenate([b for _a, b, _s in factors], axis=1))


def mean_ba(factors: Factors, *, shared_b: str, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    each = weights if weights is not None else [1.0] * len(factors)
    total = sum(each)
    if shared_b == "merge" and len(factors) > 1 and all(np.array_equal(b, factors[0][1]) for _a, b, _s in factors[1:]):
        terms = [_scaled(fa, w * s) for (fa, _b, s), w in zip(factors, each)]
        with np.errstate(over="ignore", invalid="ignore"):
            a = torch_nans(np.asarray(sum(terms), dtype=np.float32), terms) / np.float32(len(factors) if weights is None else total)
        return a, factors[0][1]
    if weights is None:
        return concat(factors, alpha=1.0 / len(factors), weights=None)
    return concat(factors, alpha=1.0 / total, weights=weights)


def mean_of(xs: Sequence[np.ndarray], weights: Weights) -> np.ndarray | None:
    """The mean of flat float32 inputs as ``ops.merge.run.mean_of`` computes it with torch on the
    CPU: unweighted, ``torch.stack(xs).mean(0)`` — a sum over the stacked dimension, in the order of
    torch's ``cascade_sum`` (``aten/src/ATen/native/cpu/SumKernel.cpp``, ``vectorized_outer_sum``:
    columns in groups of 32 (4 where fewer than 8) sum row by row in a four-level cascade, the rest in
    four interleaved partial sums), then divided by N; weighted, Σ w_t x_t / Σ w_t as Python's
    ``sum`` adds it. None where this cannot promise torch's bits — a result holding NaN (whose
    pattern is torch's choice) or an unweighted single entry (a contiguous reduction, summed in
    another order) — for the caller to ask torch."""
    if weights is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            terms = [_scaled(x, w) for x, w in zip(xs, weights)]
            mean = np.asarray(sum(terms), dtype=np.float32) / np.float32(sum(weights))
        return None if np.isnan(mean).any() else mean
    columns = xs[0].size
    if columns == 1:
        return None
    grouped = columns - columns % (32 if columns >= 8 else 4)  # the columns multi_row_sum takes
    out = np.empty(columns, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        out[:grouped] = _cascade([x[:grouped] for x in xs])
        if grouped < columns:
            rest = [x[grouped:] for x in xs]
            quads = len(rest) // 4
            partial = [_cascade(rest[k:4 * quads:4]) if quads else np.zeros(columns - grouped, np.float32) for k in range(4)]
            total = partial[0]
            for x in rest[4 * quads:]:
                total = total + x
            for p in partial[1:]:
                total = total + p
            out[grouped:] = total
        mean = out / np.float32(len(xs))
    return None if np.isnan(mean).any() else mean


def _cascade(rows: Sequence[np.ndarray]) -> np.ndarray:
    """torch's ``multi_row_sum``: rows added into four levels of float32 accumulators, each level
    flushed into the next every 2^p rows (p = max(4, ⌈log2 N⌉ // 4)), the levels added at the end."""
    size, levels = len(rows), 4
    power = max(4, (size - 1).bit_length() // levels if size else 0)
    step, mask = 1 << power, (1 << power) - 1
    width = rows[0].size if rows else 0
    acc = [np.zeros(width, dtype=np.float32) for _ in range(levels)]
    i = 0
    while i + step <= size:
        for _ in range(step):
            acc[0] = acc[0] + rows[i]
            i += 1
        for j in range(1, levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = np.zeros(width, dtype=np.float32)
            if i & (mask << (j * power)):
                break
    while i < size:
        acc[0] = acc[0] + rows[i]
        i += 1
    for j in range(1, levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]

