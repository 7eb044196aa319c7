"""Per-input statistics of the sparsifying merges: magnitude thresholds, random keep masks, seeds."""
from __future__ import annotations

import zlib

import torch
from torch import Tensor

from ..kernels import kth_largest_abs


def magnitude_threshold(x: Tensor, density: float) -> Tensor:
    """The smallest |x| that TIES keeps at ``density`` (entries ≥ it are kept; ties kept).

    0 keeps everything (density ≥ 1); +inf keeps nothing (density ≤ 0).
    """
    if density >= 1.0:
        return torch.tensor(0.0)
    if density <= 0.0:
        return torch.tensor(float("inf"))
    return kth_largest_abs(x, max(1, round(density * x.numel())))


def tensor_seed(seed: int, key: str, index: int) -> int:
    """A seed for input ``index`` of tensor ``key``, fixed by the recorded ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(key.encode()) * 31 + index) % (2**63 - 1)


def dare_keep(x: Tensor, p: float, seed: int) -> Tensor:
    """DARE's keep mask: each entry kept with probability 1−p, drawn on the CPU (the same mask on every device)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=g) >= p).to(x.device)
