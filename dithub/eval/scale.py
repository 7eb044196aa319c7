"""The one search for a final scale on a probe (``--alpha auto`` of merge, rebase and revert).

The update is computed once at scale 1; each candidate only rescales it in the base model
(``ScaledAdapter``) and scores the probe, so the search costs one forward pass over the probe per
grid point.
"""
from __future__ import annotations

from collections.abc import Callable

AUTO_GRID = tuple(round(0.1 * i, 1) for i in range(1, 16))
"""The scales ``--alpha auto`` tries (0.1 … 1.5)."""


def best_scale(score: Callable[[float], float], *, floor: float | None = None,
               grid: tuple[float, ...] = AUTO_GRID) -> tuple[float, dict[float, float]]:
    """``score`` at every scale of ``grid``, and the scale chosen: without ``floor``, the best score
    (the smallest scale among equals: the least change that does as well); with ``floor``, the
    largest scale whose score stays at or above it (how far a removal can go while what is kept
    still holds; the smallest scale if none does)."""
    scores = {a: score(a) for a in grid}
    if floor is None:
        return max(grid, key=lambda a: scores[a]), scores
    kept = [a for a in grid if scores[a] >= floor]
    return (max(kept) if kept else min(grid)), scores
