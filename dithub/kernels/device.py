"""Merging one tensor on a device: stage the N inputs there, find their statistics, run a kernel.

``DeviceMerge.stage`` copies the inputs of one tensor into a stacked [N, numel] device buffer
(through pinned host memory, on a copy stream of its own on CUDA, so the executor can stage tensor
k+1 while tensor k merges). A tensor whose stacked inputs exceed the device budget is not staged
whole: it merges in chunks of entries that fit, with its per-input statistics (TIES thresholds)
taken first, one input at a time. A method that registers a ``DeviceKernel`` (task arithmetic,
TIES, DARE, MagMax, with the parameters its ``applies`` accepts) runs the Triton kernels of
``dithub.kernels.triton_merge`` when ``kernels`` is given; every other method, and every method
without Triton, runs the registered torch function on the whole tensor on the device (SVD methods
decompose there, in fp32), which needs the whole tensor to fit. This layer knows no method by name.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import BadInput


@dataclass(frozen=True)
class DeviceKernel:
    """How a merge method runs on the device kernels, chunk by chunk: registered with the method
    (``dithub.algorithms.merge``), so the kernels dispatch through it and never by a method's name."""

    applies: Callable[[dict[str, Any]], bool]
    """Whether the kernels compute the method with these (full) parameters."""
    stats: Callable[[dict[str, Any], Callable[[], Iterator[Tensor]], int, str], Any]
    """Per-input statistics over whole tensors, before any chunk: (params, inputs, count, key), where
    ``inputs()`` yields each input flat on the device (or the host), one at a time."""
    combine: Callable[[ModuleType, dict[str, Any], Any, Tensor, int], Tensor]
    """One chunk: (kernels, params, statistics, [N, M] stacked rows, offset of the chunk's first entry)."""


class MergeMethodLike(Protocol):
    """What ``DeviceMerge`` needs of a merge method (``dithub.algorithms.merge.MergeMethod``)."""

    @property
    def device(self) -> DeviceKernel | None: ...
    def params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]: ...
    def __call__(self, vectors: Sequence[Any], *, key: str = "", **params: Any) -> Any: ...


_log = logging.getLogger("dithub.kernels")

CHUNKED = ("task arithmetic, TIES with -p convention=round, DARE (with combine=ties: -p convention=mergekit), MagMax")
"""The merges the device kernels run in chunks, for messages (the methods' ``DeviceKernel`` decides)."""


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
        self.used_kernels = False
        """Whether the device kernels merged any tensor (their sums are not the CPU's bit for bit)."""

    def stage(self, vectors: list[Tensor]) -> Staged:
        """Flatten ``vectors`` (host tensors of one shape); start copying them to the device if they fit."""
        host = [v.reshape(-1) for v in vectors]
        staged = Staged(vectors[0].shape, host)
        if self._bytes(host, host[0].numel()) <= self.budget:
            staged.stacked, staged.ready, staged.pinned = self._to_device(host, 0, host[0].numel())
        return staged

    def merge(self, method: MergeMethodLike, params: dict[str, Any], staged: Staged, key: str) -> Tensor:
        """The merged update (fp32, ``staged.shape``), on the device, or on the host if it was chunked."""
        full = method.params(params)
        hooks = method.device
        if self.kernels is None or hooks is None or not hooks.applies(full):
            return method([v.reshape(staged.shape) for v in self._whole(staged, key)], key=key, **params)
        self.used_kernels = True
        stats = hooks.stats(full, lambda: self._each_input(staged), len(staged.host), key)
        numel = staged.host[0].numel()
        if staged.stacked is not None:
            staged.wait()
            return hooks.combine(self.kernels, full, stats, staged.stacked, 0).reshape(staged.shape)
        out = torch.empty(numel, dtype=torch.float32)
        step = self._chunk(staged.host)
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            chunk, ready, _pinned = self._to_device(staged.host, start, stop)
            if ready is not None:
                _use_on_current_stream(chunk, ready)
            out[start:stop] = hooks.combine(self.kernels, full, stats, chunk, start).cpu()
        return out.reshape(staged.shape)

    def _whole(self, staged: Staged, key: str) -> list[Tensor]:
        if staged.stacked is None:
            need = self._bytes(staged.host, staged.host[0].numel())
            raise BadInput(f"tensor {key!r}: its {len(staged.host)} inputs need {need / 2**20:.0f} MiB on "
                           f"{self.device}, more than the {self.budget / 2**20:.0f} MiB this merge may use there",
                           f"merge with --device cpu, or with a method that merges in chunks ({CHUNKED})")
        staged.wait()
        return list(staged.stacked.unbind(0))

    def _each_input(self, staged: Staged) -> Iterator[Tensor]:
        """Each input, flat: rows of the staged stack, or one input moved at a time (each freed before
        the next moves), or on the host if one does not fit."""
        if staged.stacked is not None:
            staged.wait()
            yield from staged.stacked.unbind(0)
            return
        fits = self._bytes(staged.host[:1], staged.host[0].numel()) <= self.budget
        for h in staged.host:
            yield h.to(self.device) if fits else h

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
