"""Elementwise merges without torch (issue 24): task arithmetic, TIES, DARE (``rng='philox'``),
Breadcrumbs and MagMax of task vectors, and concat and mean_ba of LoRA adapters, computed on numpy
arrays read from the store's memory-mapped tensors by ``algorithms.merge.arrays`` — bit for bit what
the torch methods compute — so a CLI merge of these pays for no torch import (1-2 s). What takes the
torch path (``run.run_merge``): the other methods; DARE with torch's generator; LoRA inputs to
full-space methods (ΔW = s·B@A is a matrix product, whose rounding is the BLAS's); LoRA merges with
a rank cap (an SVD) or whose adapters save different whole tensors; fine-tunes; float64 inputs;
``--device`` other than cpu/auto, or auto on a machine that may have a CUDA device; TIES, DARE and
Breadcrumbs without the C kernels.

Inputs become float32 exactly (bfloat16 is the upper half of a float32); results are stored rounded
as torch rounds (float32 → bfloat16 to nearest even; a tensor holding NaN is converted by torch
itself: the NaN's pattern is its CPU kernels' choice).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ...algorithms.merge import arrays
from ...formats.lora import lora_modules, scaling
from ...formats.numpy_io import FLOATS, encode_float32, to_float32
from ...kernels import clib
from ...kernels.pipeline import stream
from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, TensorEntry, Tree
from ...store.view import RepoView
from ..delta_specs import promoted
from .plan import MergePlan, merged_lora_config

PIPELINE_DEPTH = 1
"""Tensors in flight between reading, merging and storing (``kernels.pipeline``): one tensor's fsync
and writes overlap the next one's merge (measured: task arithmetic and TIES of 2 x 119M parameters
from the command line 1.06-1.48 s and 1.25-2.03 s, against 1.61-2.07 s and 1.86-2.57 s in order)."""
LORA_METHODS = ("concat", "mean_ba")
"""LoRA-space methods that only scale and concatenate factors (uncapped: a rank cap decomposes)."""


def cuda_possible() -> bool:
    """Whether this machine may have a CUDA device (an NVIDIA device node or driver tool): only then
    does ``--device auto`` need torch to decide."""
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0")) or shutil.which("nvidia-smi") is not None


def applies(plan: MergePlan, trees: list[Tree], device: str) -> bool:
    """Whether this merge runs here without torch (see the module docstring for what does not)."""
    if plan.defense or device not in ("auto", "cpu") or (device == "auto" and cuda_possible()) or plan.dtype not in (None, *FLOATS):
        return False
    if not all(e.dtype in FLOATS for t in trees for e in t.tensors.values()):
        return False
    if plan.kind == "lora":
        modules = lora_modules(trees[0].tensors)
        return (plan.method in LORA_METHODS and all(t.kind == "lora" and set(t.tensors) == set(trees[0].tensors) for t in trees)
                and all(not plan.params_for(name + ".weight").get("rank") for name in modules))  # no rank cap
    if plan.method not in arrays.METHODS or plan.kind != "task_vector" or plan.sources or plan.vectors != "method":
        return False
    if plan.method == "dare" and any(plan.params_for(name)["rng"] != "philox" for name in plan.tensors):
        return False
    if plan.method in arrays.NEEDS_C and not (clib.enabled() and clib.available()):
        return False
    return all(t.kind == "task_vector" for t in trees)


def _put(repo: RepoView, values: np.ndarray, dtype: str, shape: tuple[int, ...]) -> TensorEntry:
    """Store float32 ``values`` as a ``dtype`` tensor of ``shape``."""
    return TensorEntry(repo.store.write_tensor(dtype, shape, encode_float32(np.ascontiguousarray(values).reshape(-1), dtype)), dtype, shape)


def run_lora(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory = no_progress) -> ObjectId:
    """A LoRA-space concat or mean_ba, stored (``applies`` must hold)."""
    modules = lora_modules(trees[0].tensors)
    advance = progress(f"merging with {plan.method}", len(trees[0].tensors), "tensors")
    entries: dict[str, TensorEntry] = {}
    ranks: dict[str, int] = {}
    for name, m in modules.items():
        loaded = [(repo.store.read_tensor(t.tensors[m.a_key].id), repo.store.read_tensor(t.tensors[m.b_key].id)) for t in trees]
        factors = [(to_float32(a).reshape(a.shape), to_float32(b).reshape(b.shape), scaling(t.config, name)) for (a, b), t in zip(loaded, trees)]
        params = plan.params_for(name + ".weight")
        if plan.method == "concat":
            a, b = arrays.concat(factors, alpha=params["alpha"], weights=plan.weights)
        else:
            a, b = arrays.mean_ba(factors, shared_b=params["shared_b"], weights=plan.weights)
        for key, values, dtypes in ((m.a_key, a, [x.dtype for x, _ in loaded]), (m.b_key, b, [y.dtype for _, y in loaded])):
            entries[key] = _put(repo, values, plan.dtype or promoted(dtypes), tuple(values.shape))
        ranks[name] = a.shape[0]
        advance(2)
    factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
    for name in [k for k in trees[0].tensors if k not in factor_keys]:  # saved whole (heads, biases): averaged
        stored = [repo.store.read_tensor(t.tensors[name].id) for t in trees]
        xs = [to_float32(x) for x in stored]
        mean = arrays.mean_of(xs, plan.weights)
        if mean is None:  # a NaN's pattern, or a single entry: torch's own bits
            mean = _torch_mean(xs, plan.weights)
        entries[name] = _put(repo, mean, plan.dtype or promoted([x.dtype for x in stored]), tuple(stored[0].shape))
        advance(1)
    return repo.store.write_tree(Tree("lora", merged_lora_config(trees, ranks), entries))


def _torch_mean(xs: list[np.ndarray], weights: list[float] | None) -> np.ndarray:
    """``run.mean_of`` itself, for the tensors ``arrays.mean_of`` leaves to torch."""
    import torch

    from .run import mean_of

    return mean_of([torch.from_numpy(x.copy()) for x in xs], weights).numpy()


def run(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory = no_progress) -> ObjectId:
    """The merged tree, stored (``applies`` must hold)."""
    if plan.kind == "lora":
        return run_lora(repo, plan, trees, progress)
    advance = progress(f"merging with {plan.method}", len(plan.tensors), "tensors")
    entries: dict[str, TensorEntry] = {}

    def load(name: str) -> list[np.ndarray]:
        return [to_float32(repo.store.read_tensor(t.tensors[name].id)) for t in trees]

    def compute(name: str, xs: list[np.ndarray]) -> np.ndarray:
        return arrays.merge(plan.method, xs, plan.params_for(name), key=name, weights=plan.weights)

    def store(name: str, merged: np.ndarray) -> None:
        dtype, shape = plan.tensors[name]
        entries[name] = _put(repo, merged, plan.dtype or dtype, tuple(shape))
        advance(1)

    stream(list(plan.tensors), load, compute, store, depth=PIPELINE_DEPTH)
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) else {}
    return repo.store.write_tree(Tree(plan.kind, config, entries))
