"""Philox4x32-10 in plain torch: the counter-based generator Triton kernels draw from.

Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3" (SC'11, doi:10.1145/2063384.2063405).
A draw is a pure function of (key, counter), so a GPU kernel computes each entry's draw where it
needs it (no mask tensor, any chunking) and the CPU computes the very same numbers here. The
rounds, constants and key schedule are those of ``triton.language.philox`` (uint32 lanes), so DARE
with ``rng='philox'`` keeps the same entries on both devices (tested against Triton).

Counters: entry j of input row i is (j mod 2^32, j div 2^32, i, 0); the key is the 64-bit seed
(low word, high word). Arithmetic is on int64 tensors holding uint32 values; products are split
into 16-bit halves so that no intermediate leaves int64's range.
"""
from __future__ import annotations

import torch
from torch import Tensor

ROUNDS = 10
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF
_CHUNK = 1 << 20


def philox_c0(seed: int, start: int, n: int, row: int) -> Tensor:
    """The first output word (uint32 values, int64 tensor) of Philox4x32-10 for entries
    start..start+n−1 of row ``row``, under the 64-bit key ``seed``."""
    j = torch.arange(start, start + n, dtype=torch.int64)
    counter = (j & _MASK, j >> 32, torch.full_like(j, row & _MASK), torch.zeros_like(j))
    return philox4x32(counter, (seed & _MASK, (seed >> 32) & _MASK))[0]


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[int, int]) -> tuple[Tensor, ...]:
    """Philox4x32-10 of the counter words (int64 tensors of uint32 values) under ``key``."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(ROUNDS):
        hi0, lo0 = _mul_wide(c0, _ROUND_A)
        hi2, lo2 = _mul_wide(c2, _ROUND_B)
        c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _KEY_A) & _MASK, (k1 + _KEY_B) & _MASK
    return c0, c1, c2, c3


def _mul_wide(c: Tensor, a: int) -> tuple[Tensor, Tensor]:
    """(high word, low word) of the 64-bit product of uint32 values ``c`` and the constant ``a``."""
    low = a * (c & 0xFFFF)  # < 2^48
    high = a * (c >> 16)  # < 2^48
    return (high + (low >> 16)) >> 16, (((high & 0xFFFF) << 16) + low) & _MASK


def dare_draws(seed: int, start: int, n: int, row: int) -> Tensor:
    """16-bit uniform draws (int16, on [−32768, 32767]) for DARE's keep test: the top half of
    Philox's first word, shifted to signed. Computed 1M entries at a time to bound memory."""
    out = torch.empty(n, dtype=torch.int16)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        out[lo:hi] = ((philox_c0(seed, start + lo, hi - lo, row) >> 16) - 32768).to(torch.int16)
    return out
