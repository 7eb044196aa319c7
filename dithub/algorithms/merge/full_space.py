"""Full-space merges of task vectors, one weight tensor at a time.

Trimming and thresholds are per tensor (as mergekit does), which is what lets a merge stream a model
tensor by tensor; the papers state them per model. The executor applies these to every tensor, 1-D
biases and norms included, as their reference code (and mergekit, peft) does; merges recorded before
that (no ``vectors`` in the op) replay with 1-D tensors averaged. LoRA inputs are expanded to ΔW =
s·B@A first (the result is a task vector).

* ``task_arithmetic`` — Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089:
  α · Σ τ_t. Default α = 0.3 (fusion_bench's scaling factor).
* ``ties`` — Yadav et al., "TIES-Merging", arXiv 2306.01708: trim each τ_t to its top-k% magnitudes
  (density = 0.2), elect the sign of the summed mass, average the entries that agree, scale by λ = 1.
  ``convention`` (see ``rules.trim_rank``): ``paper`` (default) as the authors' code
  (prateeky2806/ties-merging, ``src/ties_minimal.ipynb``): keep every entry ≥ the
  (n − int(density·n))-th smallest magnitude (int(density·n) + 1 entries without ties), and a sum of
  exactly 0 takes the majority sign, sign(#positive sums − #negative sums), + only if positive (the
  code flattens the whole model; here, as the trim, per tensor); ``mergekit``: exactly int(density·n)
  entries (ties in magnitude go to the lower index: mergekit's argsort leaves them unspecified) and
  + on a zero sum, as mergekit and peft; ``round``: round(density·n) with ties kept and + on a zero
  sum, dithub's first rule (merges recorded before the parameter replay with it).
* ``dare`` — Yu et al., "Language Models are Super Mario", arXiv 2311.03099: drop entries with
  probability p = 0.9, rescale by 1/(1−p), then combine by task arithmetic (``combine='ta'``, λ = 1)
  or TIES' sign election and disjoint mean (``combine='ties'``; its zero sums by ``convention``:
  ``paper``, the majority sign, as yule-BUAA/MergeLM's TIES; ``mergekit``, +, as merges recorded
  before the parameter). Seeded per tensor; the keep test
  uses 16-bit uniform draws (``mask='uint16'``, four per generator call), so 1−p is realized as
  round(65536·(1−p))/65536 and the rescale uses exactly that; ``mask='float32'`` is the first
  release's rule (one float per entry), which merges recorded without ``mask`` replay with.
  ``rng='philox'`` (default) draws from Philox4x32-10 keyed by the tensor's seed and counted by
  (entry, input), which GPU kernels compute in place (``dithub.kernels.triton_merge``) and the CPU
  computes the same (``dithub.kernels.philox``; in C, ``kernels.clib``), so both keep the same
  entries and a CLI merge needs no torch (``ops.merge.elementwise``); ``rng='torch'`` draws from
  torch's CPU generator, seeded per input, on every device: the default until issue 24, which merges
  recorded before the parameter replay with.
* ``breadcrumbs`` — Davari & Belilovsky, "Model Breadcrumbs", arXiv 2312.06795: per τ_t, drop the
  top γ = 1% magnitudes (outliers) and keep the next β = 10% (so the mask keeps ranks γ..γ+β),
  then α · Σ (default α = 0.3). The authors' code is not public; the counts are mergekit's
  (``mergekit/sparsify.py``, ``magnitude_outliers``): drop int(γ·n), keep int(β·n). ``convention``:
  ``paper`` (default) by thresholds at those ranks (ties at the lower one kept, at the upper one
  dropped); ``mergekit`` exactly those ranks (ties to the lower index); ``round`` the first
  release's round(γ·n) and round((γ+β)·n), what merges recorded before the parameter replay with.
* ``magmax`` — Marczak et al., "MagMax", arXiv 2407.06322: per entry, the input value of largest
  magnitude, scaled by α = 0.5, as the authors' code (danielm1405/magmax,
  ``src/merging/task_vectors.py`` ``merge_max_abs``, applied at 0.5 in ``merge_splitted.py``): on a
  tie the later input wins (``tie='later'``); ``tie='first'`` is dithub's first rule (merges
  recorded before the parameter replay with it; they recorded α = 1).

Each method finds its per-input statistics first (magnitude thresholds, random masks), then combines
the inputs entry by entry in one pass: in place for task arithmetic, fused by
``dithub.kernels.fused`` for the others; computation is in fp32. The majority sign of TIES' zero
sums is known after that pass: a second runs only where it is not + and a zero sum had entries to
decide (``_elect``). Independent implementations of each rule, from the code named above:
``tests/reference/``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ...errors import BadInput
from ...kernels import clib, native, philox
from ...kernels.fused import fused
from ...kernels.select import kth_largest_abs
from ...kernels.device import DeviceKernel
from .primitives import draw, magnitude_threshold, running_sum, top_mask, trimmed
from .rules import DARE_CHUNK, band_ranks, dare_limit, tensor_seed
from .registry import implements


def _flat(vectors: Sequence[Tensor]) -> list[Tensor]:
    if not vectors:
        raise BadInput("a merge needs at least one input")
    return [v.reshape(-1) for v in vectors]


def _scalar(value: float, like: Tensor) -> Tensor:
    """A float32 0-d tensor: kernels take scalars as tensors so new values do not recompile them."""
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def _flag(value: bool, like: Tensor) -> Tensor:
    return torch.tensor(value, device=like.device)


def _sign_mean(values: list[Tensor], lam: Tensor, zero_positive: Tensor,
               weights: Sequence[float] | None = None) -> tuple[Tensor, Tensor]:
    """TIES' sign election and disjoint mean, times λ — the one reference definition (the C and
    Triton kernels compute the same): the elected sign is the summed mass's; a sum of exactly 0
    elects + if ``zero_positive``, else −. With per-input ``weights`` (mergekit's), the election is
    on the weighted values and the agreeing ones are divided by the sum of their weights (1 where
    none agree). Also returns the election's counts [#sums > 0, #sums < 0, #zero sums with an
    agreeing entry] (int64): where the last is 0, the zero-sum rule decided nothing (``_elect``)."""
    if weights is not None:
        values = [v.float() * w for v, w in zip(values, weights)]
    total, positive = _summed_sign(values, zero_positive)
    num = torch.zeros_like(total)
    count = torch.zeros_like(total)
    den = torch.zeros_like(total)
    for i, v in enumerate(values):
        agree = torch.where(positive, v > 0, v < 0)
        num = num + torch.where(agree, v, 0.0)
        count = count + agree.float()
        if weights is not None:
            den = den + torch.where(agree, weights[i], 0.0)
    divisor = count.clamp(min=1.0) if weights is None else torch.where(den == 0, 1.0, den)
    return num / divisor * lam, _election_counts(total, count)


def _summed_sign(values: list[Tensor], zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    """Σ values (in input order) and where the elected sign is + (a zero sum: ``zero_positive``)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total, (total > 0) | ((total == 0) & zero_positive)


def _election_counts(total: Tensor, count: Tensor) -> Tensor:
    return torch.stack([(total > 0).sum(), (total < 0).sum(), ((total == 0) & (count > 0)).sum()]).cpu()


def _elect(kernel: Callable[..., tuple[Tensor, Tensor]], xs: list[Tensor], args: tuple, majority: bool) -> Tensor:
    """Run a sign-electing kernel. With ``majority`` (the TIES authors' rule), a zero sum takes the
    tensor's majority sign, sign(#sums > 0 − #sums < 0), read as + only when positive: known after
    one pass, so a second runs only where it is not + and some zero sum had entries to decide."""
    out, counts = kernel(xs, *args, _flag(True, xs[0]))
    if majority and undecided(counts):
        out, _ = kernel(xs, *args, _flag(False, xs[0]))
    return out


def undecided(counts: Tensor) -> bool:
    """Whether the majority rule changes a merge elected with + on zero sums (``_sign_mean``'s counts)."""
    return int(counts[2]) > 0 and not int(counts[0]) > int(counts[1])


@fused(native.ties)
def _ties_kernel(xs: list[Tensor], thresholds: Tensor, lam: Tensor, zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    kept = [torch.where(x.float().abs() >= thresholds[i], x.float(), 0.0) for i, x in enumerate(xs)]
    return _sign_mean(kept, lam, zero_positive)


@fused(native.dare_ta)
def _dare_ta_kernel(xs: list[Tensor], draws: list[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> Tensor:
    """Σ x·[draw ≤ limit] / keep_prob, scaled: the keep test runs inside the fused pass."""
    total = torch.where(draws[0] <= limit, xs[0].float() / keep_prob, 0.0)
    for x, d in zip(xs[1:], draws[1:]):
        total = total + torch.where(d <= limit, x.float() / keep_prob, 0.0)
    return total * lam


@fused(native.dare_ties)
def _dare_ties_kernel(xs: list[Tensor], draws: list[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor,
                      zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    return _sign_mean([torch.where(d <= limit, x.float() / keep_prob, 0.0) for x, d in zip(xs, draws)], lam, zero_positive)


@fused(native.band)
def _band_kernel(xs: list[Tensor], lows: Tensor, highs: Tensor, alpha: Tensor) -> Tensor:
    total = torch.zeros_like(xs[0], dtype=torch.float32)
    for i, x in enumerate(xs):
        a = x.float().abs()
        total = total + torch.where((a >= lows[i]) & (a < highs[i]), x.float(), 0.0)
    return total * alpha


@fused(native.magmax)
def _magmax_kernel(xs: list[Tensor], alpha: Tensor, later: Tensor) -> Tensor:
    """Per entry the value of largest magnitude (on a tie the later input's if ``later``, else the first's)."""
    best = xs[0].float()
    for x in xs[1:]:
        a, b = x.float().abs(), best.abs()
        best = torch.where((a > b) | ((a == b) & later), x.float(), best)
    return best * alpha


def _always(_params: dict[str, Any]) -> bool:
    return True


def _no_stats(_params: dict[str, Any], _inputs: Callable[[], Iterator[Tensor]], _n: int, _key: str) -> None:
    return None


def _ta_on_device(k: ModuleType, params: dict[str, Any], _stats: None, stacked: Tensor, _offset: int) -> Tensor:
    return k.task_arithmetic(stacked, torch.full((stacked.shape[0],), params["alpha"], device=stacked.device))


@implements("task_arithmetic", device=DeviceKernel(_always, _no_stats, _ta_on_device))
def task_arithmetic(vectors: Sequence[Tensor], *, alpha: float, weights: list[float] | None) -> Tensor:
    xs = _flat(vectors)  # α · Σ w_t τ_t with weights (mergekit's task_arithmetic); in place: at the memory bound
    return running_sum(xs, torch.float32, weights).mul_(alpha).reshape(vectors[0].shape)


def _ties_thresholds(params: dict[str, Any], inputs: Callable[[], Iterator[Tensor]], _n: int, _key: str) -> Tensor:
    return torch.stack([magnitude_threshold(x, params["density"]) for x in inputs()])  # where the inputs are


def _ties_on_device(k: ModuleType, params: dict[str, Any], thresholds: Tensor, stacked: Tensor, _offset: int) -> Tensor:
    return k.ties(stacked, thresholds.to(stacked.device), params["lam"])


@implements("ties", device=DeviceKernel(lambda p: p["convention"] == "round", _ties_thresholds, _ties_on_device))
def ties(vectors: Sequence[Tensor], *, density: float, lam: float, convention: str, weights: list[float] | None) -> Tensor:
    xs, thresholds = trimmed(_flat(vectors), density, convention)
    if weights is not None:  # mergekit's weighted TIES: trimmed unweighted, elected and averaged weighted
        kept = [torch.where(x.float().abs() >= thresholds[i], x.float(), 0.0) for i, x in enumerate(xs)]
        return _elect(lambda _xs, zp: _sign_mean(kept, _scalar(lam, xs[0]), zp, weights), xs, (),
                      convention == "paper").reshape(vectors[0].shape)
    return _elect(_ties_kernel, xs, (thresholds, _scalar(lam, xs[0])), convention == "paper").reshape(vectors[0].shape)


def _dare_draws(params: dict[str, Any], _inputs: Callable[[], Iterator[Tensor]], n: int, key: str) -> tuple:
    """(limit, keep probability, Philox key or None, the CPU draws or None)."""
    p, mask, rng, seed = params["p"], params["mask"], params["rng"], params["seed"]
    limit, keep_prob = dare_limit(p, mask)
    if rng == "philox":  # drawn inside the kernel, keyed by the tensor's seed
        return limit, keep_prob, tensor_seed(seed, key, 0), None
    return limit, keep_prob, None, draw_source(n, p=p, seed=seed, mask=mask, rng=rng, key=key)


def _dare_on_device(k: ModuleType, params: dict[str, Any], stats: tuple, stacked: Tensor, offset: int) -> Tensor:
    limit, keep_prob, key_seed, draws = stats
    if draws is None:
        return k.dare(stacked, seed=key_seed, offset=offset, limit=limit, keep_prob=keep_prob, lam=params["lam"],
                      combine=params["combine"])
    chunk = [d.to(stacked.device) for d in draws(offset, offset + stacked.shape[1])]
    return dare_chunk(list(stacked.unbind(0)), chunk, params, limit, keep_prob)[0]


@implements("dare", device=DeviceKernel(lambda p: p["combine"] == "ta" or p["convention"] == "mergekit", _dare_draws, _dare_on_device))
def dare(vectors: Sequence[Tensor], *, p: float, combine: str, lam: float, seed: int, mask: str, rng: str,
         convention: str, key: str, weights: list[float] | None) -> Tensor:
    xs = _flat(vectors)
    limit, keep_prob = dare_limit(p, mask)
    params = {"p": p, "combine": combine, "lam": lam, "mask": mask, "weights": weights}
    dev, n = xs[0].device, xs[0].numel()
    draws = draw_source(len(xs), p=p, seed=seed, mask=mask, rng=rng, key=key)
    majority = combine == "ties" and convention == "paper"
    out = torch.empty(n, dtype=torch.float32, device=dev) if n > DARE_CHUNK else None
    counts = torch.zeros(3, dtype=torch.int64)
    fixes: list[tuple[Tensor, Tensor]] = []
    """(entries, values) where the majority rule, if the tensor's majority is not +, changes the merge."""
    for start in range(0, n, DARE_CHUNK):  # the draws of one chunk at a time: N x chunk, not N x tensor
        stop = min(n, start + DARE_CHUNK)
        part, chunk = [x[start:stop] for x in xs], [d.to(dev) for d in draws(start, stop)]
        merged, chunk_counts = dare_chunk(part, chunk, params, limit, keep_prob, zero_positive=True)
        if majority and chunk_counts is not None:
            counts += chunk_counts
            if int(chunk_counts[2]):  # rare: decide both ways while the draws are at hand
                other, _ = dare_chunk(part, chunk, params, limit, keep_prob, zero_positive=False)
                entries = (other != merged).nonzero().flatten()
                fixes.append((entries + start, other[entries]))
        if out is None:
            out = merged
        else:
            out[start:stop] = merged
    assert out is not None
    if fixes and not int(counts[0]) > int(counts[1]):  # the tensor's majority is not +: the zero sums go −
        for entries, values in fixes:
            out[entries] = values
    return out.reshape(vectors[0].shape)


def draw_source(n_inputs: int, *, p: float, seed: int, mask: str, rng: str, key: str) -> Callable[[int, int], list[Tensor]]:
    """``draws(start, stop)``: the CPU draws of entries start:stop of each input of tensor ``key``.
    torch's generators are streams, so consecutive calls must cover consecutive entries; Philox
    (keyed by the tensor's seed, counted by entry and input) takes any range."""
    if rng == "philox":
        key_seed = tensor_seed(seed, key, 0)
        if clib.enabled() and clib.available():  # the same draws (tested), computed in C
            return lambda start, stop: [torch.from_numpy(clib.philox_draws(key_seed, start, stop - start, i)) for i in range(n_inputs)]
        return lambda start, stop: [philox.dare_draws(key_seed, start, stop - start, i) for i in range(n_inputs)]
    gens = [torch.Generator().manual_seed(tensor_seed(seed, key, i)) for i in range(n_inputs)]
    return lambda start, stop: [draw(g, stop - start, p, mask) for g in gens]


def dare_chunk(xs: list[Tensor], draws: list[Tensor], params: dict, limit: int, keep_prob: float,
               zero_positive: bool = True) -> tuple[Tensor, Tensor | None]:
    """DARE's fused keep-rescale-combine over flat inputs ``xs`` and their ``draws`` (fp32, flat),
    with the election's counts under ``combine='ties'`` (``_sign_mean``; None under ``ta``)."""
    limit_t = torch.tensor(limit, dtype=torch.uint8 if params["mask"] == "float32" else torch.int16, device=xs[0].device)
    args = (xs, draws, limit_t, _scalar(keep_prob, xs[0]), _scalar(params["lam"], xs[0]))
    weights = params.get("weights")
    if weights is not None:  # mergekit: each input dropped and rescaled, then weighted
        kept = [torch.where(d <= limit_t, x.float() / keep_prob, 0.0) for x, d in zip(xs, draws)]
        if params["combine"] == "ta":
            return running_sum(kept, torch.float32, weights).mul_(params["lam"]), None
        return _sign_mean(kept, args[4], _flag(zero_positive, xs[0]), weights)
    if params["combine"] == "ta":
        return _dare_ta_kernel(*args), None
    return _dare_ties_kernel(*args, _flag(zero_positive, xs[0]))


@implements("breadcrumbs")
def breadcrumbs(vectors: Sequence[Tensor], *, beta: float, gamma: float, alpha: float, convention: str,
                weights: list[float] | None) -> Tensor:
    xs = _flat(vectors)
    lows, highs = [], []
    top, bottom = band_ranks(xs[0].numel(), beta, gamma, convention)
    if convention == "mergekit":  # exactly those ranks, ties going to the lower index
        xs = [torch.where(top_mask(x, bottom) & ~top_mask(x, top), x, 0.0) for x in xs]
        lows, highs = [torch.tensor(0.0)] * len(xs), [torch.tensor(float("inf"))] * len(xs)
    else:  # by thresholds: ties at the lower one kept, at the upper one dropped
        for x in xs:
            lows.append(kth_largest_abs(x, bottom) if bottom > top else torch.tensor(float("inf")))
            highs.append(kth_largest_abs(x, top) if top > 0 else torch.tensor(float("inf")))
    dev = xs[0].device
    lows_t, highs_t = torch.stack(lows).to(dev), torch.stack(highs).to(dev)
    if weights is not None:  # α · Σ w_t (banded τ_t), as mergekit's breadcrumbs
        banded = []
        for i, x in enumerate(xs):
            a = x.float().abs()
            banded.append(torch.where((a >= lows_t[i]) & (a < highs_t[i]), x.float(), 0.0))
        return running_sum(banded, torch.float32, weights).mul_(alpha).reshape(vectors[0].shape)
    out = _band_kernel(xs, lows_t, highs_t, _scalar(alpha, xs[0]))
    return out.reshape(vectors[0].shape)


def _magmax_on_device(k: ModuleType, params: dict[str, Any], _stats: None, stacked: Tensor, _offset: int) -> Tensor:
    return k.magmax(stacked, params["alpha"], later=params["tie"] == "later")


@implements("magmax", device=DeviceKernel(_always, _no_stats, _magmax_on_device))
def magmax(vectors: Sequence[Tensor], *, alpha: float, tie: str) -> Tensor:
    xs = _flat(vectors)
    return _magmax_kernel(xs, _scalar(alpha, xs[0]), _flag(tie == "later", xs[0])).reshape(vectors[0].shape)
