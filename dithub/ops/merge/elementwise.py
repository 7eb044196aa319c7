"""Elementwise merges without torch (issue 24, first methods): task arithmetic and MagMax of task
vectors, computed on numpy arrays read from the store's memory-mapped tensors, bit for bit what the
torch methods compute (``algorithms.merge.full_space``), so a CLI merge of task vectors pays for no
torch import (1-2 s). The other methods, LoRA inputs (expanded to ΔW), fine-tunes, float64 inputs and
a CUDA machine take the torch path (``run.run_merge``).

Bit-identity, operation by operation: inputs become float32 exactly (bfloat16 is the upper half of a
float32); torch adds in float32; ``add_(x, alpha=w)`` is a fused multiply-add on the CPU, which
computing in float64 and rounding once to float32 reproduces (the product of two float32 is exact in
float64; measured equal on 1M entries where numpy's separate multiply and add differ in 18%);
scalars are float32 as torch casts them; float32 → bfloat16 rounds to nearest even, as torch does
(a tensor holding NaN is converted by torch itself: the NaN's pattern is its CPU kernels' choice).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, TensorData, TensorEntry, Tree
from ...store.view import RepoView
from .plan import MergePlan

METHODS = ("task_arithmetic", "magmax")
DTYPES = ("F32", "F16", "BF16")


def cuda_possible() -> bool:
    """Whether this machine may have a CUDA device (an NVIDIA device node or driver tool): only then
    does ``--device auto`` need torch to decide."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0")) or shutil.which("nvidia-smi") is not None


def applies(plan: MergePlan, trees: list[Tree], device: str) -> bool:
    """Whether this merge runs here without torch (see the module docstring for what does not)."""
    if plan.method not in METHODS or plan.kind != "task_vector" or plan.sources or plan.vectors != "method":
        return False
    if device not in ("auto", "cpu") or (device == "auto" and cuda_possible()):
        return False
    if plan.dtype not in (None, *DTYPES) or any(t.kind != "task_vector" for t in trees):
        return False
    return all(e.dtype in DTYPES for t in trees for e in t.tensors.values())


def _f32(t: TensorData) -> np.ndarray:
    """The tensor's values as float32, exactly (float32 itself without a copy: read-only)."""
    if t.dtype == "F32":
        return np.frombuffer(t.data, dtype=np.float32)
    if t.dtype == "BF16":
        return (np.frombuffer(t.data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(t.data, dtype=np.float16).astype(np.float32)


@np.errstate(over="ignore", invalid="ignore")  # infinities and NaN propagate as in torch, silently
def _task_arithmetic(xs: list[np.ndarray], alpha: float, weights: list[float] | None) -> np.ndarray:
    if weights is None:
        total = xs[0].copy()
        for x in xs[1:]:
            total += x
    else:
        total = (xs[0].astype(np.float64) * float(np.float32(weights[0]))).astype(np.float32)
        for x, w in zip(xs[1:], weights[1:]):  # a fused multiply-add, rounded once
            total = (total.astype(np.float64) + float(np.float32(w)) * x.astype(np.float64)).astype(np.float32)
    return (total.astype(np.float64) * float(np.float32(alpha))).astype(np.float32)


@np.errstate(over="ignore", invalid="ignore")
def _magmax(xs: list[np.ndarray], alpha: float, later: bool) -> np.ndarray:
    best = xs[0]
    for x in xs[1:]:
        a, b = np.abs(x), np.abs(best)
        best = np.where((a > b) | ((a == b) & later), x, best)
    return (best.astype(np.float64) * float(np.float32(alpha))).astype(np.float32)


def _encode(values: np.ndarray, dtype: str) -> bytes:
    """float32 values as ``dtype``'s bytes, rounded as torch rounds."""
    if dtype == "F32":
        return values.tobytes()
    if dtype == "F16":
        return values.astype(np.float16).tobytes()
    if np.isnan(values).any():  # torch's NaN pattern is its CPU kernels' (0xFFFF with AVX2): asked of torch itself
        import torch

        return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    bits = values.view(np.uint32)
    return ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def run(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory = no_progress) -> ObjectId:
    """The merged tree, stored (``applies`` must hold)."""
    advance = progress(f"merging with {plan.method}", len(plan.tensors), "tensors")
    entries: dict[str, TensorEntry] = {}
    for name, (dtype, shape) in plan.tensors.items():
        xs = [_f32(repo.store.read_tensor(t.tensors[name].id)) for t in trees]
        params: dict[str, Any] = plan.params_for(name)
        if plan.method == "task_arithmetic":
            merged = _task_arithmetic(xs, params["alpha"], plan.weights)
        else:
            merged = _magmax(xs, params["alpha"], params["tie"] == "later")
        out = plan.dtype or dtype
        entries[name] = TensorEntry(repo.store.write_tensor(out, shape, _encode(merged, out)), out, tuple(shape))
        advance(1)
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) else {}
    return repo.store.write_tree(Tree(plan.kind, config, entries))
