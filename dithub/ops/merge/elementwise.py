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

from ...formats.lora import lora_modules, scaling
from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, TensorData, TensorEntry, Tree
from ...store.view import RepoView
from ..delta_specs import promoted
from .plan import MergePlan, merged_lora_config

METHODS = ("task_arithmetic", "magmax")
LORA_METHODS = ("concat", "mean_ba")
"""LoRA-space methods that only scale and concatenate factors (uncapped: a rank cap decomposes)."""
DTYPES = ("F32", "F16", "BF16")


def cuda_possible() -> bool:
    """Whether this machine may have a CUDA device (an NVIDIA device node or driver tool): only then
    does ``--device auto`` need torch to decide."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0")) or shutil.which("nvidia-smi") is not None


def applies(plan: MergePlan, trees: list[Tree], device: str) -> bool:
    """Whether this merge runs here without torch (see the module docstring for what does not)."""
    if device not in ("auto", "cpu") or (device == "auto" and cuda_possible()) or plan.dtype not in (None, *DTYPES):
        return False
    if not all(e.dtype in DTYPES for t in trees for e in t.tensors.values()):
        return False
    if plan.kind == "lora":
        modules = lora_modules(trees[0].tensors)
        factors = {k for m in modules.values() for k in (m.a_key, m.b_key)}
        return (plan.method in LORA_METHODS and all(t.kind == "lora" and set(t.tensors) <= factors for t in trees)
                and all(not plan.params_for(name + ".weight").get("rank") for name in modules))  # no whole tensors, no cap
    if plan.method not in METHODS or plan.kind != "task_vector" or plan.sources or plan.vectors != "method":
        return False
    return all(t.kind == "task_vector" for t in trees)


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


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    """``factor * x`` as torch computes a Python float times a float32 tensor (the factor in float32)."""
    return (x * np.float32(factor)).astype(np.float32)


def _concat(factors: list[tuple[np.ndarray, np.ndarray, float]], weight: float, weights: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    each = weights if weights is not None else [1.0] * len(factors)
    return (np.concatenate([_scaled(a, weight * w * s) for (a, _b, s), w in zip(factors, each)], axis=0),
            np.concatenate([b for _a, b, _s in factors], axis=1))


def _mean_ba(factors: list[tuple[np.ndarray, np.ndarray, float]], shared_b: str, weights: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    each = weights if weights is not None else [1.0] * len(factors)
    total = sum(each)
    if shared_b == "merge" and len(factors) > 1 and all(np.array_equal(b, factors[0][1]) for _a, b, _s in factors[1:]):
        if weights is None:
            a = sum(_scaled(fa, s) for fa, _b, s in factors) / np.float32(len(factors))
        else:
            a = sum(_scaled(fa, w * s) for (fa, _b, s), w in zip(factors, each)) / np.float32(total)
        return np.asarray(a, dtype=np.float32), factors[0][1]
    if weights is None:
        return _concat(factors, 1.0 / len(factors), None)
    return _concat(factors, 1.0 / total, weights)


def _put(repo: RepoView, values: np.ndarray, dtype: str, shape: tuple[int, ...]) -> TensorEntry:
    """Store float32 ``values`` as a ``dtype`` tensor of ``shape``."""
    return TensorEntry(repo.store.write_tensor(dtype, shape, _encode(np.ascontiguousarray(values).reshape(-1), dtype)), dtype, shape)


def run_lora(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory = no_progress) -> ObjectId:
    """A LoRA-space concat or mean_ba, stored (``applies`` must hold)."""
    modules = lora_modules(trees[0].tensors)
    advance = progress(f"merging with {plan.method}", len(trees[0].tensors), "tensors")
    entries: dict[str, TensorEntry] = {}
    ranks: dict[str, int] = {}
    for name, m in modules.items():
        loaded = [(repo.store.read_tensor(t.tensors[m.a_key].id), repo.store.read_tensor(t.tensors[m.b_key].id)) for t in trees]
        factors = [(_f32(a).reshape(a.shape), _f32(b).reshape(b.shape), scaling(t.config, name)) for (a, b), t in zip(loaded, trees)]
        params = plan.params_for(name + ".weight")
        if plan.method == "concat":
            a, b = _concat(factors, params["alpha"], plan.weights)
        else:
            a, b = _mean_ba(factors, params["shared_b"], plan.weights)
        for key, values, dtypes in ((m.a_key, a, [x.dtype for x, _ in loaded]), (m.b_key, b, [y.dtype for _, y in loaded])):
            entries[key] = _put(repo, values, plan.dtype or promoted(dtypes), tuple(values.shape))
        ranks[name] = a.shape[0]
        advance(2)
    return repo.store.write_tree(Tree("lora", merged_lora_config(trees, ranks), entries))


def run(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory = no_progress) -> ObjectId:
    """The merged tree, stored (``applies`` must hold)."""
    if plan.kind == "lora":
        return run_lora(repo, plan, trees, progress)
    advance = progress(f"merging with {plan.method}", len(plan.tensors), "tensors")
    entries: dict[str, TensorEntry] = {}
    for name, (dtype, shape) in plan.tensors.items():
        xs = [_f32(repo.store.read_tensor(t.tensors[name].id)) for t in trees]
        params: dict[str, Any] = plan.params_for(name)
        if plan.method == "task_arithmetic":
            merged = _task_arithmetic(xs, params["alpha"], plan.weights)
        else:
            merged = _magmax(xs, params["alpha"], params["tie"] == "later")
        entries[name] = _put(repo, merged, plan.dtype or dtype, tuple(shape))
        advance(1)
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) else {}
    return repo.store.write_tree(Tree(plan.kind, config, entries))
