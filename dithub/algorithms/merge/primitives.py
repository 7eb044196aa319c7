"""Per-input statistics of the sparsifying merges: magnitude thresholds, random keep masks, seeds."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...kernels.select import kth_largest_abs, kth_largest_abs_each
from .rules import MASK_LEVELS, dare_limit, fixed_threshold, tensor_seed, trim_rank  # noqa: F401  (their home: rules)


def running_sum(xs: Sequence[Tensor], dtype: torch.dtype, weights: Sequence[float] | None = None) -> Tensor:
    """Σ xs (with ``weights``, Σ w_t x_t) in one ``dtype`` buffer, added in order: each input read
    once, none stacked or copied."""
    total = xs[0].to(dtype, copy=True)
    if weights is None:
        for x in xs[1:]:
            total.add_(x)
        return total
    total.mul_(weights[0])
    for x, w in zip(xs[1:], weights[1:]):
        total.add_(x.to(dtype), alpha=w)
    return total


def magnitude_threshold(x: Tensor, density: float) -> Tensor:
    """The smallest |x| that TIES keeps at ``density`` (entries ≥ it are kept; ties kept): 0 keeps
    everything (density ≥ 1); +inf keeps nothing (density ≤ 0)."""
    if density >= 1.0:
        return torch.tensor(0.0)
    if density <= 0.0:
        return torch.tensor(float("inf"))
    return kth_largest_abs(x, max(1, round(density * x.numel())))


def magnitude_thresholds(xs: Sequence[Tensor], density: float, convention: str = "round") -> Tensor:
    """The magnitude each input is trimmed at ([N], float32; entries ≥ it are kept): 0 keeps
    everything (density ≥ 1), +inf nothing. Small CPU inputs are ranked in one call."""
    rank = trim_rank(xs[0].numel(), density, convention) if density < 1.0 else 0
    value = fixed_threshold(density, rank)
    if value is not None:
        return torch.full((len(xs),), value, dtype=torch.float32, device=xs[0].device)
    return kth_largest_abs_each(xs, rank)


def top_mask(x: Tensor, k: int, threshold: Tensor | None = None) -> Tensor:
    """The k entries of largest magnitude of flat ``x`` (a boolean mask of exactly k), ties at the
    k-th going to the lower index: a stable descending sort's first k, found without sorting.
    ``threshold`` is x's k-th largest magnitude when the caller has it."""
    if k <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if k >= x.numel():
        return torch.ones_like(x, dtype=torch.bool)
    t = kth_largest_abs(x, k) if threshold is None else threshold
    magnitude = x.abs()
    keep = magnitude > t.to(x.device, magnitude.dtype)
    need = k - int(keep.sum())
    at = (magnitude == t.to(x.device, magnitude.dtype)).nonzero().flatten()
    keep[at[:need]] = True
    return keep


def trimmed(xs: Sequence[Tensor], density: float, convention: str) -> tuple[list[Tensor], Tensor]:
    """(inputs, thresholds) for TIES' trim: each input keeps its entries ≥ its threshold. Under
    ``mergekit``, an input with ties at its threshold comes back with exactly int(density·n)
    entries kept (``top_mask``) and threshold 0."""
    thresholds = magnitude_thresholds(xs, density, convention)
    if convention != "mergekit" or not 0.0 < density < 1.0:
        return list(xs), thresholds
    rank, out = trim_rank(xs[0].numel(), density, convention), []
    for i, x in enumerate(xs):
        if rank == 0 or int((x.abs() >= thresholds[i]).sum()) == rank:
            out.append(x)
            continue
        out.append(torch.where(top_mask(x, rank, thresholds[i]), x, 0.0))
        thresholds[i] = 0.0
    return out, thresholds


def dare_draws(x: Tensor, p: float, seed: int, mask: str = "uint16") -> tuple[Tensor, int, float]:
    """DARE's random draws for ``x``: (draws, limit, keep probability); an entry is kept where draw
    ≤ limit. Drawn on the CPU, so the mask is the same on every device. ``uint16`` (the default):
    one 16-bit uniform per entry, four per 64-bit draw of the generator, the limit
    round(65536·(1−p)) levels up; the keep probability is exactly that many levels / 65536
    (within 2^-17 of 1−p) and the rescale uses it, so the merge stays unbiased. ``float32``
    (merges recorded before the parameter existed): one float per entry, kept at ≥ p, as before."""
    limit, keep_prob = dare_limit(p, mask)
    draws = draw(torch.Generator().manual_seed(seed), x.numel(), p, mask)
    return draws.reshape(x.shape).to(x.device), limit, keep_prob


def draw(g: torch.Generator, n: int, p: float, mask: str) -> Tensor:
    """The next ``n`` draws of generator ``g`` (flat, on the CPU). Drawing a tensor in consecutive
    pieces gives the same values as drawing it whole (tested), as long as every piece but the
    last holds a multiple of four entries, so a merge can draw chunk by chunk."""
    if mask == "float32":
        return (torch.rand(n, generator=g) < p).to(torch.uint8)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, generator=g)
    return words.view(torch.int16)[:n]  # uniform on [-32768, 32767]


def dare_keep(x: Tensor, p: float, seed: int, mask: str = "uint16") -> Tensor:
    """DARE's keep mask (boolean) for ``x`` (see ``dare_draws``)."""
    draws, limit, _ = dare_draws(x, p, seed, mask)
    return draws <= limit


def svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The thin SVD of ``x`` in its dtype. LAPACK's fp32 divide-and-conquer can fail to converge on
    ill-conditioned inputs (a residual with many near-zero singular values, as Iso-CTS forms); the
    decomposition is then done in fp64 (and, failing that, on x plus a fixed perturbation 1e-12·‖x‖
    that moves no singular value by more than that) and cast back."""
    try:
        return torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        pass
    x64 = x.double()
    try:
        u, s, vh = torch.linalg.svd(x64, full_matrices=False)
    except torch.linalg.LinAlgError:
        g = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(x64.shape, generator=g, dtype=torch.float64).to(x64.device)
        u, s, vh = torch.linalg.svd(x64 + noise * (1e-12 * float(x64.norm()) / max(1.0, float(noise.norm()))), full_matrices=False)
    return u.to(x.dtype), s.to(x.dtype), vh.to(x.dtype)
