"""Merge kernels in Triton: each reads a tile of all N inputs once and writes the merged tile once.

The inputs of one tensor (or one chunk of it) sit on the device as rows of a stacked [N, M]
buffer, which is where the host-to-device copies put them, so a kernel's program loads an
[N, BLOCK] tile, reduces it over the inputs in registers and stores BLOCK results: the memory
traffic of a copy. Per-input statistics (TIES' magnitude thresholds) are computed before, on the
device (``dithub.kernels.select``); DARE's keep test draws Philox numbers inside the kernel from
(seed, entry, input), so no mask is ever stored and any chunking gives the same draws.

What each computes is the definition in ``dithub.algorithms.merge.full_space`` (the papers are cited there),
in fp32. Sums here are tree reductions over the N inputs where the torch path adds in input order,
so results agree to float rounding (a few ulps of the largest term), not bit for bit; TIES' sign
election can differ where the summed mass is within that rounding of zero. DARE with
``rng='philox'`` keeps exactly the entries the CPU path keeps (``dithub.kernels.philox``).

Importing this module imports Triton; on a machine without a GPU, Triton's interpreter runs the
same kernels on CPU tensors when ``TRITON_INTERPRET=1`` is set before Triton is imported (the tests do).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

TILE = 8192
"""Entries per program (N x BLOCK): large enough to stream, small enough for registers."""


@triton.jit
def _tile(x_ptr, n_inputs, numel, stride, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    rows = tl.arange(0, ROWS)
    mask = (rows[:, None] < n_inputs) & (cols[None, :] < numel)
    x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride + cols[None, :], mask=mask, other=0.0)
    return x.to(tl.float32), rows, cols


@triton.jit
def _sign_mean(kept):
    """TIES' sign election (+ on a zero sum) and disjoint mean over axis 0; absent rows are 0."""
    positive = tl.sum(kept, axis=0) >= 0
    agree = tl.where(positive[None, :], kept > 0, kept < 0)
    num = tl.sum(tl.where(agree, kept, 0.0), axis=0)
    count = tl.sum(agree.to(tl.float32), axis=0)
    return num / tl.maximum(count, 1.0)


@triton.jit
def _ta_kernel(x_ptr, w_ptr, out_ptr, n_inputs, numel, stride, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    x, rows, cols = _tile(x_ptr, n_inputs, numel, stride, ROWS, BLOCK)
    w = tl.load(w_ptr + rows, mask=rows < n_inputs, other=0.0)
    tl.store(out_ptr + cols, tl.sum(x * w[:, None], axis=0), mask=cols < numel)


@triton.jit
def _ties_kernel(x_ptr, thr_ptr, out_ptr, n_inputs, numel, stride, lam, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    x, rows, cols = _tile(x_ptr, n_inputs, numel, stride, ROWS, BLOCK)
    thr = tl.load(thr_ptr + rows, mask=rows < n_inputs, other=float("inf"))
    kept = tl.where(tl.abs(x) >= thr[:, None], x, 0.0)
    tl.store(out_ptr + cols, _sign_mean(kept) * lam, mask=cols < numel)


@triton.jit
def _dare_kernel(x_ptr, out_ptr, n_inputs, numel, stride, seed, offset, limit, keep_prob, lam,
                 TIES: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    x, rows, cols = _tile(x_ptr, n_inputs, numel, stride, ROWS, BLOCK)
    j = cols + offset  # the entry's index in the whole tensor: the draw does not depend on chunking
    c0 = tl.broadcast_to((j & 0xFFFFFFFF).to(tl.uint32)[None, :], (ROWS, BLOCK))
    c1 = tl.broadcast_to((j >> 32).to(tl.uint32)[None, :], (ROWS, BLOCK))
    c2 = tl.broadcast_to(rows.to(tl.uint32)[:, None], (ROWS, BLOCK))
    word, _, _, _ = tl.philox(seed, c0, c1, c2, c0 * 0)
    draw = (word >> 16).to(tl.int32) - 32768
    kept = tl.where(draw <= limit, x / keep_prob, 0.0)
    if TIES:
        merged = _sign_mean(kept)
    else:
        merged = tl.sum(kept, axis=0)
    tl.store(out_ptr + cols, merged * lam, mask=cols < numel)


@triton.jit
def _magmax_kernel(x_ptr, out_ptr, n_inputs, numel, stride, alpha, LATER: tl.constexpr, ROWS: tl.constexpr,
                   BLOCK: tl.constexpr):
    x, rows, cols = _tile(x_ptr, n_inputs, numel, stride, ROWS, BLOCK)
    size = tl.where(rows[:, None] < n_inputs, tl.abs(x), -1.0)
    largest = tl.max(size, axis=0)
    at_largest = size == largest[None, :]
    if LATER:  # the last input of largest magnitude (the reference's >=)
        best = tl.max(tl.where(at_largest, rows[:, None], -1), axis=0)
    else:  # the first (dithub's first rule)
        best = tl.min(tl.where(at_largest, rows[:, None], ROWS), axis=0)
    picked = tl.sum(tl.where(rows[:, None] == best[None, :], x, 0.0), axis=0)
    tl.store(out_ptr + cols, picked * alpha, mask=cols < numel)


def task_arithmetic(stacked: Tensor, weights: Tensor) -> Tensor:
    """Σ_i weights[i] · stacked[i] (fp32)."""
    return _run(_ta_kernel, stacked, (weights,), ())


def ties(stacked: Tensor, thresholds: Tensor, lam: float) -> Tensor:
    """TIES on rows trimmed at ``thresholds`` (|x| ≥ threshold kept): elect, disjoint mean, × λ."""
    return _run(_ties_kernel, stacked, (thresholds,), (lam,))


def dare(stacked: Tensor, *, seed: int, offset: int, limit: int, keep_prob: float, lam: float, combine: str) -> Tensor:
    """DARE on rows whose first entry is entry ``offset`` of the tensor: keep where the Philox
    draw ≤ ``limit``, rescale by 1/keep_prob, then sum (``ta``) or elect and average (``ties``), × λ."""
    return _run(_dare_kernel, stacked, (), (seed, offset, limit, keep_prob, lam), TIES=combine == "ties")


def magmax(stacked: Tensor, alpha: float, later: bool = False) -> Tensor:
    """Per entry the row value of largest magnitude (on a tie the last row's if ``later``, else the
    first's), × α."""
    return _run(_magmax_kernel, stacked, (), (alpha,), LATER=later)


def _run(kernel, stacked: Tensor, before: tuple, after: tuple, **consts: bool) -> Tensor:
    """Launch ``kernel(x, *before, out, n, numel, stride, *after)`` over [N, M] ``stacked``."""
    n, m = stacked.shape
    if m and stacked.stride(1) != 1:
        raise ValueError("stacked inputs must be contiguous along entries")
    rows = triton.next_power_of_2(n)
    block = max(16, TILE // rows)
    out = torch.empty(m, dtype=torch.float32, device=stacked.device)
    if m:
        kernel[(triton.cdiv(m, block),)](stacked, *before, out, n, m, stacked.stride(0), *after,
                                         ROWS=rows, BLOCK=block, **consts)
    return out
