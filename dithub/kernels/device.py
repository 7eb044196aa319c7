"""Merging one tensor on a device: stage the N inputs there, find their statistics, run a kernel.

``DeviceMerge.stage`` copies the inputs of one tensor into a stacked [N, numel] device buffer
(through pinned host memory, on a copy stream of its own on CUDA, so the executor can stage tensor
k+1 while tensor k merges). A tensor whose stacked inputs exceed the device budget is not staged
whole: it merges in chunks of entries that fit, with its per-input statistics (TIES thresholds)
taken first, one input at a time. The elementwise methods (task arithmetic, TIES, DARE, MagMax)
run the Triton kernels of ``dithub.kernels.triton_merge`` when ``kernels`` is given; every other
method, and every method without Triton, runs the registered torch function on the whole tensor on
the device (SVD methods decompose there, in fp32), which needs the whole tensor to fit.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ..errors import BadInput

ELEMENTWISE = ("task_arithmetic", "ties", "dare", "magmax")
"""Methods the Triton kernels merge, chunk by chunk when a tensor does not fit (with the rules
``on_kernels`` names)."""


def on_kernels(method: str, params: dict[str, Any]) -> bool:
    """Whether the Triton kernels compute ``method`` with ``params``. They implement dithub's first
    rules for the sign election: TIES trimmed at round(density·n) (``convention=round``) and a zero sum
    elected + (DARE-TIES ``convention=mergekit``). The papers' (the defaults) give a zero sum the
    majority sign of the whole tensor, so they run as the registered torch function on the device,
    which needs the whole tensor to fit. MagMax runs either tie rule."""
    if method == "ties":
        return params["convention"] == "round"
    if method == "dare":
        return params["combine"] == "ta" or params["convention"] == "mergekit"
    return method in ELEMENTWISE

_log = logging.getLogger("dithub.kernels")


def triton_kernels(device: torch.device) -> ModuleType | None:
    """The Triton kernels for ``device`` (CUDA with Triton installed), else None (torch methods)."""
    if device.type != "cuda":
        return None
    try:
        from . import triton_merge
    except Exception as exc:  # noqa: BLE001  no Triton, or one that does not load: torch kernels are exact too
        _log.warning("dithub: Triton merge kernels unavailable (%s); using torch on %s", type(exc).__name__, device)
        return None
    return triton_merge


def device_budget(device: torch.device) -> int:
    """Bytes one staged tensor (inputs + output) may use: a sixth of the free device memory, as up to
    three tensors are in flight (staged, merging, coming back) with room for kernel temporaries."""
    if device.type != "cuda":
        return sys.maxsize
    free, _total = torch.cuda.mem_get_info(device)
    return free // 6


@dataclass
class Staged:
    """The inputs of one tensor, flat on the host, and stacked on the device when they fit."""

    shape: torch.Size
    host: list[Tensor]
    stacked: Tensor | None = None
    ready: Any = None
    """The CUDA event the staging copy recorded (None on the CPU)."""
    pinned: Tensor | None = field(default=None, repr=False)
    """The pinned host buffer the copy reads; kept alive until the copy is done."""

    def wait(self) -> None:
        """Make the computing stream wait for the staging copy (nothing to wait for on the CPU)."""
        if self.ready is not None and self.stacked is not None:
            _use_on_current_stream(self.stacked, self.ready)


class DeviceMerge:
    """Stage and merge tensors on ``device`` within ``budget`` bytes per staged tensor."""

    def __init__(self, device: torch.device, kernels: ModuleType | None = None, budget: int | None = None) -> None:
        self.device = device
        self.kernels = kernels
        self.budget = device_budget(device) if budget is None else budget
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def stage(self, vectors: list[Tensor]) -> Staged:
        """Flatten ``vectors`` (host tensors of one shape); start copying them to the device if they fit."""
        host = [v.reshape(-1) for v in vectors]
        staged = Staged(vectors[0].shape, host)
        if self._bytes(host, host[0].numel()) <= self.budget:
            staged.stacked, staged.ready, staged.pinned = self._to_device(host, 0, host[0].numel())
        return staged

    def merge(self, method: str, params: dict[str, Any], staged: Staged, key: str) -> Tensor:
        """The merged update (fp32, ``staged.shape``), on the device, or on the host if it was chunked."""
        from ..merge import get_method

        full = get_method(method).params(params)
        if self.kernels is None or not on_kernels(method, full):
            return get_method(method)([v.reshape(staged.shape) for v in self._whole(staged, key)], key=key, **params)
        stats = self._stats(method, full, staged, key)
        numel = staged.host[0].numel()
        if staged.stacked is not None:
            staged.wait()
            return self._combine(method, full, stats, staged.stacked, 0).reshape(staged.shape)
        out = torch.empty(numel, dtype=torch.float32)
        step = self._chunk(staged.host)
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            chunk, ready, _pinned = self._to_device(staged.host, start, stop)
            if ready is not None:
                _use_on_current_stream(chunk, ready)
            out[start:stop] = self._combine(method, full, stats, chunk, start).cpu()
        return out.reshape(staged.shape)

    def _whole(self, staged: Staged, key: str) -> list[Tensor]:
        if staged.stacked is None:
            need = self._bytes(staged.host, staged.host[0].numel())
            raise BadInput(f"tensor {key!r}: its {len(staged.host)} inputs need {need / 2**20:.0f} MiB on "
                           f"{self.device}, more than the {self.budget / 2**20:.0f} MiB this merge may use there",
                           "merge with --device cpu, or with a method that merges in chunks ("
                           + ", ".join(ELEMENTWISE) + "; TIES with -p convention=round, DARE-TIES with -p convention=mergekit)")
        staged.wait()
        return list(staged.stacked.unbind(0))

    def _stats(self, method: str, params: dict[str, Any], staged: Staged, key: str) -> Any:
        """Per-input statistics over whole tensors: TIES' thresholds, DARE's draw settings."""
        from ..merge.primitives import dare_limit, magnitude_threshold, tensor_seed

        if method == "ties":
            density = params["density"]
            if staged.stacked is not None:
                staged.wait()
                return torch.stack([magnitude_threshold(r, density).to(self.device) for r in staged.stacked.unbind(0)])
            # one input on the device at a time (each freed before the next moves), or on the host if one does not fit
            fits = self._bytes(staged.host[:1], staged.host[0].numel()) <= self.budget
            return torch.stack([magnitude_threshold(h.to(self.device) if fits else h, density).to(self.device)
                                for h in staged.host])
        if method == "dare":
            from ..merge.full_space import draw_source

            p, mask, rng, seed = params["p"], params["mask"], params["rng"], params["seed"]  # checked by params()
            limit, keep_prob = dare_limit(p, mask)
            if rng == "philox":  # drawn inside the kernel, keyed by the tensor's seed
                return limit, keep_prob, tensor_seed(seed, key, 0), None
            return limit, keep_prob, None, draw_source(len(staged.host), p=p, seed=seed, mask=mask, rng=rng, key=key)
        return None

    def _combine(self, method: str, params: dict[str, Any], stats: Any, stacked: Tensor, offset: int) -> Tensor:
        k = self.kernels
        assert k is not None
        if method == "task_arithmetic":
            return k.task_arithmetic(stacked, torch.full((stacked.shape[0],), params["alpha"], device=stacked.device))
        if method == "ties":
            return k.ties(stacked, stats, params["lam"])
        if method == "magmax":
            return k.magmax(stacked, params["alpha"], later=params["tie"] == "later")
        limit, keep_prob, key_seed, draws = stats
        if draws is None:
            return k.dare(stacked, seed=key_seed, offset=offset, limit=limit, keep_prob=keep_prob,
                          lam=params["lam"], combine=params["combine"])
        from ..merge.full_space import dare_chunk

        chunk = [d.to(stacked.device) for d in draws(offset, offset + stacked.shape[1])]
        return dare_chunk(list(stacked.unbind(0)), chunk, params, limit, keep_prob)[0]

    def _chunk(self, host: list[Tensor]) -> int:
        """Entries per chunk: as many as fit the budget, a multiple of four (DARE's draws)."""
        per_entry = self._bytes(host, 1)
        return max(4, self.budget // per_entry // 4 * 4)

    @staticmethod
    def _bytes(host: list[Tensor], entries: int) -> int:
        return entries * (len(host) * host[0].element_size() + 4)

    def _to_device(self, host: list[Tensor], start: int, stop: int) -> tuple[Tensor, Any, Tensor | None]:
        """Rows start:stop of every input, stacked on the device: (buffer, copy event, pinned source)."""
        if self.copy_stream is None:
            return torch.stack([h[start:stop] for h in host]).to(self.device), None, None
        pinned = torch.empty((len(host), stop - start), dtype=host[0].dtype, pin_memory=True)
        for i, h in enumerate(host):
            pinned[i].copy_(h[start:stop])
        with torch.cuda.stream(self.copy_stream):  # allocated on the copy stream: no wait on the compute queue
            stacked = torch.empty(pinned.shape, dtype=pinned.dtype, device=self.device)
            stacked.copy_(pinned, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        return stacked, ready, pinned


def to_host(tensor: Tensor) -> Callable[[], Tensor]:
    """Start copying ``tensor`` to host memory; the returned function waits for the copy and gives
    the host tensor (on CUDA the copy goes to pinned memory without blocking the computing thread)."""
    if tensor.device.type != "cuda":
        host = tensor.cpu()
        return lambda: host
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensor.device))

    def wait() -> Tensor:
        done.synchronize()
        return host

    return wait


def _use_on_current_stream(buffer: Tensor, ready: Any) -> None:
    """Order the current stream after ``ready`` and keep ``buffer`` allocated until it is done with it."""
    current = torch.cuda.current_stream(buffer.device)
    current.wait_event(ready)
    buffer.record_stream(current)
