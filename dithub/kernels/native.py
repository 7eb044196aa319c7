"""The C merge kernels (``clib``) on torch tensors: CPU tensors are handed over as numpy views of
their memory; inputs in another dtype than float32 are converted a chunk at a time. The number of
threads is torch's intra-op count (as the plain functions would use). Without a working compiler
the plain torch functions run (``fused``; exact too, slower)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import clib
from .clib import available, build

_CHUNK = 1 << 20
"""Entries converted to float32 at a time for inputs in another dtype."""

__all__ = ["available", "band", "build", "count_at_least", "dare_ta", "dare_ties", "kth_largest_abs_rows", "magmax", "ties"]


def _threads() -> int:
    return torch.get_num_threads()


def _chunks(xs: Sequence[Tensor], aux: Sequence[Tensor]) -> list[tuple[int, int, list[Tensor], list[Tensor]]]:
    """(start, stop, float32 inputs, aux) pieces: the whole range when the inputs are float32."""
    n = xs[0].numel()
    if all(x.dtype == torch.float32 and x.is_contiguous() for x in xs) and all(a.is_contiguous() for a in aux):
        return [(0, n, list(xs), list(aux))]
    return [(s, min(n, s + _CHUNK), [x[s:s + _CHUNK].float().contiguous() for x in xs],
             [a[s:s + _CHUNK].contiguous() for a in aux]) for s in range(0, n, _CHUNK)]


def _run(call: Callable[..., Any], xs: Sequence[Tensor], aux: Sequence[Tensor], *args: Any) -> tuple[Tensor, Tensor]:
    """``call(inputs, [aux,] *args, out=, nt=)`` over the inputs, chunk by chunk where converted; the
    sign election's counts (where ``call`` returns them) are summed over the chunks."""
    out = torch.empty(xs[0].numel(), dtype=torch.float32)
    dest = out.numpy()
    counts = torch.zeros(3, dtype=torch.int64)
    for start, stop, fx, fa in _chunks(xs, aux):
        arrays = [x.detach().numpy() for x in fx]
        lead = (arrays, [a.detach().numpy() for a in fa]) if aux else (arrays,)
        result = call(*lead, *args, out=dest[start:stop], nt=_threads())
        if isinstance(result, tuple):
            counts += torch.from_numpy(result[1])
    return out, counts


def ties(xs: Sequence[Tensor], thresholds: Tensor, lam: Tensor, zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    """(merged, [#sums > 0, #sums < 0, #zero sums with agreeing entries]): see ``full_space._sign_mean``."""
    return _run(clib.ties, xs, [], thresholds.float().tolist(), float(lam), bool(zero_positive))


def dare_ta(xs: Sequence[Tensor], draws: Sequence[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> Tensor:
    return _run(clib.dare_ta, xs, draws, int(limit), float(keep_prob), float(lam))[0]


def dare_ties(xs: Sequence[Tensor], draws: Sequence[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor,
              zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    return _run(clib.dare_ties, xs, draws, int(limit), float(keep_prob), float(lam), bool(zero_positive))


def band(xs: Sequence[Tensor], lows: Tensor, highs: Tensor, alpha: Tensor) -> Tensor:
    return _run(clib.band, xs, [], lows.float().tolist(), highs.float().tolist(), float(alpha))[0]


def magmax(xs: Sequence[Tensor], alpha: Tensor, later: Tensor) -> Tensor:
    return _run(clib.magmax, xs, [], float(alpha), bool(later))[0]


def kth_largest_abs_rows(rows: Tensor, k: int) -> Tensor:
    """The k-th largest |x| of each row of a 2-D CPU tensor (float32 [rows])."""
    return torch.from_numpy(clib.kth_largest_abs_rows(rows.detach().float().contiguous().numpy(), k, _threads()))


def count_at_least(x: Tensor, values: Tensor) -> Tensor:
    """[#(|x| ≥ values[i]) for the four values] (int64)."""
    counts = torch.zeros(4, dtype=torch.int64)
    for _start, _stop, (fx,), _ in _chunks([x], []):
        clib.count_at_least(fx.detach().numpy(), values.float().tolist(), counts.numpy(), _threads())
    return counts
