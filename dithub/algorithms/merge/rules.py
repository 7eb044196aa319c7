"""The counting rules of the sparsifying merges, in plain Python: shared by their torch
implementations (``full_space``, ``primitives``) and their numpy ones (``arrays``), so both keep
the same entries."""
from __future__ import annotations

import zlib

from ...errors import BadInput


def trim_rank(n: int, density: float, convention: str) -> int:
    """The rank (1 = largest) of the magnitude a trim to ``density`` of ``n`` entries keeps down to.
    ``paper``: int(density·n) + 1, as prateeky2806/ties-merging keeps every entry ≥ the
    (n − int(density·n))-th smallest magnitude (ties at it kept too); ``mergekit``: exactly
    int(density·n) (see ``top_mask``); ``round``: max(1, round(density·n)), ties kept."""
    count = int(density * n)
    if convention == "paper":
        return min(n, count + 1)
    return count if convention == "mergekit" else max(1, round(density * n))


def fixed_threshold(density: float, rank: int) -> float | None:
    """The threshold a trim to ``density`` has without ranking anything (0 keeps everything: density
    ≥ 1; +inf nothing: density ≤ 0 or a rank of 0), else None: rank the magnitudes at ``rank``."""
    if density >= 1.0:
        return 0.0
    return float("inf") if density <= 0.0 or rank == 0 else None


def band_ranks(n: int, beta: float, gamma: float, convention: str) -> tuple[int, int]:
    """Breadcrumbs' band of ``n`` entries as magnitude ranks (top, bottom): drop the ``top`` largest,
    keep down to the ``bottom``-th. ``round``: round(γ·n) and round((γ+β)·n) (at least one kept);
    otherwise mergekit's counts, drop int(γ·n) and keep the next int(β·n)."""
    if convention == "round":
        top = round(gamma * n)
        return top, min(n, max(top + 1, round((gamma + beta) * n)))
    top = int(gamma * n)
    return top, min(n, top + int(beta * n))


def tensor_seed(seed: int, key: str, index: int) -> int:
    """A seed for input ``index`` of tensor ``key``, fixed by the recorded ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(key.encode()) * 31 + index) % (2**63 - 1)


MASK_LEVELS = 1 << 16


def dare_limit(p: float, mask: str) -> tuple[int, float]:
    """(limit, keep probability) of ``draw``'s values: an entry is kept where its draw ≤ limit."""
    if mask == "float32":
        return 0, 1.0 - p
    levels = round(MASK_LEVELS * (1.0 - p))
    if levels == 0:
        raise BadInput(f"dare: p = {p} keeps nothing at 16-bit resolution", "use p ≤ 0.99999, or --param mask=float32")
    return levels - MASK_LEVELS // 2 - 1, levels / MASK_LEVELS


DARE_CHUNK = 1 << 21
"""Entries merged per pass by DARE (a multiple of four: see ``primitives.draw``)."""
