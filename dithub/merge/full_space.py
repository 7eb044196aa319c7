"""Full-space merges of task vectors, one weight tensor at a time.

Trimming and thresholds are per tensor (as mergekit does), which is what lets
a merge stream a model tensor by tensor; the papers state them per model.
The executor applies these to every tensor, 1-D biases and norms included, as
their reference code (and mergekit, peft) does; merges recorded before that
(no ``vectors`` in the op) replay with 1-D tensors averaged. LoRA inputs are
expanded to ΔW = s·B@A first (the result is a task vector).

* ``task_arithmetic`` — Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089:
  α · Σ τ_t. Default α = 0.3 (fusion_bench's scaling factor).
* ``ties`` — Yadav et al., "TIES-Merging", arXiv 2306.01708: trim each τ_t to its top-k% magnitudes
  (k = 20), elect the sign of the summed mass, average the entries that agree, scale by λ = 1.
* ``dare`` — Yu et al., "Language Models are Super Mario", arXiv 2311.03099: drop entries with
  probability p = 0.9, rescale by 1/(1−p), then combine by task arithmetic (``combine='ta'``, λ = 1)
  or TIES' sign election and disjoint mean (``combine='ties'``). Seeded per tensor; the keep test
  uses 16-bit uniform draws (``mask='uint16'``, four per generator call), so 1−p is realized as
  round(65536·(1−p))/65536 and the rescale uses exactly that; ``mask='float32'`` is the first
  release's rule (one float per entry), which merges recorded without ``mask`` replay with.
  ``rng='torch'`` (default) draws from torch's CPU generator, seeded per input, on every device;
  ``rng='philox'`` draws from Philox4x32-10 keyed by the tensor's seed and counted by (entry, input),
  which GPU kernels compute in place (``dithub.kernels.triton_merge``) and the CPU computes the same
  (``dithub.kernels.philox``), so both keep the same entries.
* ``breadcrumbs`` — Davari & Belilovsky, "Model Breadcrumbs", arXiv 2312.06795: per τ_t, drop the
  top γ = 1% magnitudes (outliers) and keep the next β = 10% (so the mask keeps ranks γ..γ+β),
  then α · Σ (default α = 0.3).
* ``magmax`` — Marczak et al., "MagMax", arXiv 2407.06322: per entry, the input value of largest
  magnitude (the first input's on a tie), scaled by α = 1.

Each method finds its per-input statistics first (magnitude thresholds, random
masks), then combines the inputs entry by entry in one pass: in place for task
arithmetic, fused by ``dithub.kernels.fused`` for the others; computation is in fp32.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import BadInput
from ..params import NATURAL, REAL, Range
from ..kernels import COMPILE_MIN_NUMEL, fused, kth_largest_abs, native, philox
from ..kernels.fused import runs_fused
from .primitives import dare_limit, draw, magnitude_thresholds, running_sum, tensor_seed
from .registry import register


def _flat(vectors: Sequence[Tensor]) -> list[Tensor]:
    if not vectors:
        raise BadInput("a merge needs at least one input")
    return [v.reshape(-1) for v in vectors]


def _scalar(value: float, like: Tensor) -> Tensor:
    """A float32 0-d tensor: kernels take scalars as tensors so new values do not recompile them."""
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def _sign_mean(values: list[Tensor], lam: Tensor) -> Tensor:
    """TIES' sign election (sign of the summed mass, + on 0) and disjoint mean, times λ."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    positive = total >= 0
    num = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for v in values:
        agree = torch.where(positive, v > 0, v < 0)
        num = num + torch.where(agree, v, 0.0)
        count = count + agree.float()
    return num / count.clamp(min=1.0) * lam


def _ties_small(xs: list[Tensor], thresholds: Tensor, lam: Tensor) -> Tensor:
    """``_ties_kernel`` on small inputs where no fused kernel runs (under the compile threshold off
    the CPU, or without the native kernels): the same values bit for bit, in place on the stacked inputs with products instead of selects (``torch.where`` costs 3x
    a multiply on the CPU). With s = ±1 the elected sign, an input agrees where p = s·v > 0, and the
    disjoint sum Σ_agree v = s·Σ max(p, 0) exactly (negation commutes with rounding); a dropped entry
    becomes ±0, which no comparison or sum here tells from +0, and + 0.0 turns a -0 result into the
    +0 the plain kernel gives. Inputs holding NaN or ±inf take the plain kernel."""
    kept = torch.stack([x.float() for x in xs])
    magnitude = kept.abs()
    if not float(magnitude.max()) < float("inf"):  # NaN propagates through max
        return _ties_kernel.plain(xs, thresholds, lam)
    kept.mul_(magnitude >= thresholds[:, None])
    total = kept[0]
    for v in kept[1:]:  # summed in _sign_mean's order
        total = total + v
    sign = (total >= 0).float().mul_(2).sub_(1)
    agreeing = kept.mul_(sign).clamp_min_(0)  # s·v where it agrees, ±0 elsewhere
    num = torch.zeros_like(total)
    for v in agreeing:
        num = num + v
    count = torch.count_nonzero(agreeing, dim=0).float()
    return (num * sign + 0.0) / count.clamp(min=1.0) * lam


@fused(native.ties)
def _ties_kernel(xs: list[Tensor], thresholds: Tensor, lam: Tensor) -> Tensor:
    kept = [torch.where(x.float().abs() >= thresholds[i], x.float(), 0.0) for i, x in enumerate(xs)]
    return _sign_mean(kept, lam)


@fused(functools.partial(native.dare, combine="ta"))
def _dare_ta_kernel(xs: list[Tensor], draws: list[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> Tensor:
    """Σ x·[draw ≤ limit] / keep_prob, scaled: the keep test runs inside the fused pass."""
    total = torch.where(draws[0] <= limit, xs[0].float() / keep_prob, 0.0)
    for x, d in zip(xs[1:], draws[1:]):
        total = total + torch.where(d <= limit, x.float() / keep_prob, 0.0)
    return total * lam


@fused(functools.partial(native.dare, combine="ties"))
def _dare_ties_kernel(xs: list[Tensor], draws: list[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> Tensor:
    return _sign_mean([torch.where(d <= limit, x.float() / keep_prob, 0.0) for x, d in zip(xs, draws)], lam)


@fused(native.band)
def _band_kernel(xs: list[Tensor], lows: Tensor, highs: Tensor, alpha: Tensor) -> Tensor:
    total = torch.zeros_like(xs[0], dtype=torch.float32)
    for i, x in enumerate(xs):
        a = x.float().abs()
        total = total + torch.where((a >= lows[i]) & (a < highs[i]), x.float(), 0.0)
    return total * alpha


@fused(native.magmax)
def _magmax_kernel(xs: list[Tensor], alpha: Tensor) -> Tensor:
    """Per entry the value of largest magnitude (the earliest on a tie)."""
    best = xs[0].float()
    for x in xs[1:]:
        best = torch.where(x.float().abs() > best.abs(), x.float(), best)
    return best * alpha


@register("task_arithmetic", paper="2212.04089", defaults={"alpha": 0.3}, ranges={"alpha": REAL})
def task_arithmetic(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    xs = _flat(vectors)
    return running_sum(xs, torch.float32).mul_(alpha).reshape(vectors[0].shape)  # in place: at the memory bound


@register("ties", paper="2306.01708", defaults={"density": 0.2, "lam": 1.0},
          ranges={"density": Range(0.0, 1.0, low_open=True), "lam": REAL})
def ties(vectors: Sequence[Tensor], *, density: float, lam: float) -> Tensor:
    xs = _flat(vectors)
    thresholds = magnitude_thresholds(xs, density)
    kernel = _ties_small if xs[0].numel() < COMPILE_MIN_NUMEL and not runs_fused(xs[0]) else _ties_kernel
    return kernel(xs, thresholds, _scalar(lam, xs[0])).reshape(vectors[0].shape)


@register("dare", paper="2311.03099",
          defaults={"p": 0.9, "combine": "ta", "lam": 1.0, "seed": 0, "mask": "uint16", "rng": "torch"},
          legacy={"mask": "float32"}, ranges={"p": Range(0.0, 1.0, high_open=True), "lam": REAL, "seed": NATURAL},
          choices={"combine": ("ta", "ties"), "mask": ("uint16", "float32"), "rng": ("torch", "philox")},
          check=lambda p: "rng=philox draws 16-bit uniforms: use mask=uint16" if p["rng"] == "philox" and p["mask"] != "uint16" else None)
def dare(vectors: Sequence[Tensor], *, p: float, combine: str, lam: float, seed: int, mask: str, rng: str,
         key: str) -> Tensor:
    xs = _flat(vectors)
    limit, keep_prob = dare_limit(p, mask)
    params = {"p": p, "combine": combine, "lam": lam, "mask": mask}
    dev, n = xs[0].device, xs[0].numel()
    draws = draw_source(len(xs), p=p, seed=seed, mask=mask, rng=rng, key=key)
    if n <= DARE_CHUNK:
        return dare_chunk(xs, [d.to(dev) for d in draws(0, n)], params, limit, keep_prob).reshape(vectors[0].shape)
    out = torch.empty(n, dtype=torch.float32, device=dev)
    for start in range(0, n, DARE_CHUNK):  # the draws of one chunk at a time: N x chunk, not N x tensor
        stop = min(n, start + DARE_CHUNK)
        out[start:stop] = dare_chunk([x[start:stop] for x in xs], [d.to(dev) for d in draws(start, stop)],
                                     params, limit, keep_prob)
    return out.reshape(vectors[0].shape)


def draw_source(n_inputs: int, *, p: float, seed: int, mask: str, rng: str, key: str) -> Callable[[int, int], list[Tensor]]:
    """``draws(start, stop)``: the CPU draws of entries start:stop of each input of tensor ``key``.
    torch's generators are streams, so consecutive calls must cover consecutive entries; Philox
    (keyed by the tensor's seed, counted by entry and input) takes any range."""
    if rng == "philox":
        key_seed = tensor_seed(seed, key, 0)
        return lambda start, stop: [philox.dare_draws(key_seed, start, stop - start, i) for i in range(n_inputs)]
    gens = [torch.Generator().manual_seed(tensor_seed(seed, key, i)) for i in range(n_inputs)]
    return lambda start, stop: [draw(g, stop - start, p, mask) for g in gens]


def dare_chunk(xs: list[Tensor], draws: list[Tensor], params: dict, limit: int, keep_prob: float) -> Tensor:
    """DARE's fused keep-rescale-combine over flat inputs ``xs`` and their ``draws`` (fp32, flat)."""
    kernel = _dare_ta_kernel if params["combine"] == "ta" else _dare_ties_kernel
    limit_t = torch.tensor(limit, dtype=torch.uint8 if params["mask"] == "float32" else torch.int16, device=xs[0].device)
    return kernel(xs, draws, limit_t, _scalar(keep_prob, xs[0]), _scalar(params["lam"], xs[0]))


DARE_CHUNK = 1 << 21
"""Entries merged per pass by DARE (a multiple of four: see ``primitives.draw``)."""


@register("breadcrumbs", paper="2312.06795", defaults={"beta": 0.1, "gamma": 0.01, "alpha": 0.3},
          ranges={"beta": Range(0.0, 1.0, low_open=True), "gamma": Range(0.0, 1.0, high_open=True), "alpha": REAL},
          check=lambda p: f"need beta <= 1 - gamma (got beta={p['beta']}, gamma={p['gamma']})" if p["beta"] > 1 - p["gamma"] else None)
def breadcrumbs(vectors: Sequence[Tensor], *, beta: float, gamma: float, alpha: float) -> Tensor:
    xs = _flat(vectors)
    lows, highs = [], []
    for x in xs:
        n = x.numel()
        top = round(gamma * n)
        lows.append(kth_largest_abs(x, min(n, max(top + 1, round((gamma + beta) * n)))))
        highs.append(kth_largest_abs(x, top) if top > 0 else torch.tensor(float("inf")))
    dev = xs[0].device
    out = _band_kernel(xs, torch.stack(lows).to(dev), torch.stack(highs).to(dev), _scalar(alpha, xs[0]))
    return out.reshape(vectors[0].shape)


@register("magmax", paper="2407.06322", defaults={"alpha": 1.0}, ranges={"alpha": REAL})
def magmax(vectors: Sequence[Tensor], *, alpha: float) -> Tensor:
    xs = _flat(vectors)
    return _magmax_kernel(xs, _scalar(alpha, xs[0])).reshape(vectors[0].shape)
