"""Merge execution: stream a planned merge tensor by tensor (or LoRA module by module) through its
method, on the CPU or the device kernels, and store the tree; replay a recorded merge; sweep the
final scale on a probe.

The merge result is ``method(named inputs)``, exactly. The ``op`` record holds the method, every
parameter (defaults and seed included), the input commits and where it ran (``execution``), so
``replay_merge`` recomputes the same tree bit for bit.
"""
from __future__ import annotations

import os
from dataclasses import replace
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...algorithms.merge import get_method
from ...algorithms.merge.lora_space import Capped
from ...algorithms.merge.registry import recorded_params
from ...errors import BadInput
from ...eval import ScaledAdapter, best_scale, load_metric, load_probe
from ...formats import lora_modules, scaling
from ...formats.torch_io import TORCH_DTYPES, to_torch
from ...kernels.device import DeviceMerge, to_host, triton_kernels
from ...kernels.pipeline import stream
from ...progress import ProgressFactory, no_progress
from ...store import Commit, ObjectId, TensorEntry, Tree, nbytes_of
from ...store.view import RepoView
from ..deltas import common_dtype, delta_loader, put_tensor
from ..executor import Executor
from .plan import MergePlan, merged_lora_config, plan_merge, recorded_probes


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec not in ("cpu", "cuda") and not spec.startswith("cuda:"):
        raise BadInput(f"--device {spec!r} is not one of auto, cpu, cuda")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {spec} but no CUDA device is visible", "use --device cpu (or auto)")
    return torch.device(spec)


CPU_PIPELINE_DEPTH = 0
"""Items between the stages of a CPU merge (0: in turn; see docs/performance.md for why)."""


def _out_dtype(plan: MergePlan, like: torch.dtype) -> torch.dtype:
    """The dtype the merge writes: the one asked for (``--dtype``), else the inputs'."""
    return TORCH_DTYPES[plan.dtype] if plan.dtype else like


def run_merge(repo: RepoView, plan: MergePlan, progress: ProgressFactory = no_progress, device: str = "cpu",
              merger: DeviceMerge | None = None, busy: dict[str, float] | None = None,
              report: dict[str, Any] | None = None, executor: Executor | None = None) -> ObjectId:
    """Stream the planned merge (tensor by tensor, or module by module) on ``device``; store the tree.
    On a GPU (or with an explicit ``merger``) the stages overlap (``dithub.kernels.pipeline``): the
    inputs of tensor k+1 are staged on the device while tensor k merges and tensor k−1 is copied back
    and stored, so device memory holds about three tensors' inputs. On the CPU they run in turn.
    ``busy`` collects each stage's working seconds (load, compute, store) for benchmarks;
    ``report`` what the op should record besides its inputs (a rank cap's ``rank_error``).
    ``executor`` (not local): the tensors in groups balanced by bytes, each group a task that reads
    its inputs from the repository's store and writes its results there; the same kernels on the same
    device class, so the tree is the local one's, bit for bit."""
    if plan.defense:  # the merge, then the defence on its result
        from .defend import defend

        merged = run_merge(repo, replace(plan, defense=None), progress, device, merger, busy, report, executor)
        return defend(repo, plan, merged)
    if get_method(plan.method).space == "activation":  # runs the model on the CPU
        from .activation import run_activation

        return run_activation(repo, plan, progress)
    dev = resolve_device(device)
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    if plan.kind == "lora":
        if report is not None and dev.type == "cuda":
            report["execution"] = DEVICE
        return _run_lora(repo, plan, trees, progress, dev, report, executor)
    if executor is not None and executor.name != "local":
        groups = balanced(plan.tensors, executor_slots())
        advance = progress(f"merging with {plan.method} on {executor.name}", len(groups), "tasks")
        entries: dict[str, TensorEntry] = {}
        for part in executor.map(merge_group, groups, shared=(repo.opener(), plan, dev.type)):
            entries.update(part)
            advance(1)
        if report is not None and dev.type == "cuda":
            report["execution"] = DEVICE
    else:
        if merger is None and dev.type == "cuda" and plan.weights is None:  # weighted merges: the torch methods, on the device
            merger = DeviceMerge(dev, triton_kernels(dev))
        entries = merge_tensors(repo, plan, trees, list(plan.tensors), dev, merger, busy,
                                progress(f"merging with {plan.method}", len(plan.tensors), "tensors"))
        if report is not None and (dev.type == "cuda" or (merger is not None and merger.used_kernels)):
            report["execution"] = DEVICE
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) and trees[0].kind == plan.kind else {}
    return repo.store.write_tree(Tree(plan.kind, config, {n: entries[n] for n in plan.tensors}))


def merge_tensors(repo: RepoView, plan: MergePlan, trees: list[Tree], names: list[str], dev: torch.device,
                  merger: DeviceMerge | None = None, busy: dict[str, float] | None = None,
                  advance: Any = lambda n: None) -> dict[str, TensorEntry]:
    """Merge and store the planned tensors ``names`` (one task's share, or all of them)."""
    method = get_method(plan.method)
    loaders = [delta_loader(repo, t, plan.base) for t in trees]
    sources = plan.sources or [{} for _ in trees]
    entries: dict[str, TensorEntry] = {}

    def load(name: str) -> Any:
        dtype, shape = plan.tensors[name]
        vectors = common_dtype([get(src.get(name, name)).reshape(shape) for get, src in zip(loaders, sources)])
        if merger is not None and method.applies_to(shape, plan.vectors, name):
            return merger.stage(vectors)
        return [v.to(dev) for v in vectors]

    def compute(name: str, loaded: Any) -> Any:
        dtype, shape = plan.tensors[name]
        if merger is not None and method.applies_to(shape, plan.vectors, name):
            merged = merger.merge(method, plan.params_for(name), loaded, name)
        elif not method.applies_to(shape, plan.vectors, name):  # non-matrices for SVD methods (and 1-D tensors of old merges): averaged
            merged = mean_of(loaded, plan.weights)
            if method.matrices_only and plan.vectors == "method" and method.scale_param:  # α on the whole merged vector
                merged = merged * float(plan.params_for(name)[method.scale_param])
        else:
            merged = method(loaded, key=name, weights=plan.weights, **plan.params_for(name))
        return to_host(merged.to(_out_dtype(plan, TORCH_DTYPES[dtype])))

    def store(name: str, result: Any) -> None:
        entries[name] = put_tensor(repo, result())
        advance(1)

    stream({n: plan.tensors[n] for n in names}, load, compute, store, depth=CPU_PIPELINE_DEPTH if merger is None else 1, busy=busy)
    return entries


def merge_group(shared: tuple[Any, MergePlan, str], names: list[str]) -> dict[str, TensorEntry]:
    """One executor task: open the repository, merge ``names`` on the device class the driver chose
    (a worker without it refuses: workers never pick their own hardware), store them."""
    opener, plan, device = shared
    repo = opener()
    dev = resolve_device(device)
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    merger = DeviceMerge(dev, triton_kernels(dev)) if dev.type == "cuda" and plan.weights is None else None
    entries = merge_tensors(repo, plan, trees, names, dev, merger)
    repo.store.sync()
    return entries


def balanced(tensors: Mapping[str, tuple[str, tuple[int, ...]]], slots: int) -> list[list[str]]:
    """The tensors in about ``4 · slots`` groups of similar bytes (largest first into the lightest
    group), each in the plan's order: enough tasks to balance, few enough that a task's overhead stays small."""
    count = max(1, min(len(tensors), 4 * slots))
    groups: list[list[str]] = [[] for _ in range(count)]
    weight = [0] * count
    for name in sorted(tensors, key=lambda n: -nbytes_of(*tensors[n])):
        i = weight.index(min(weight))
        groups[i].append(name)
        weight[i] += nbytes_of(*tensors[name])
    order = {n: i for i, n in enumerate(tensors)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def executor_slots() -> int:
    """How many tasks can run at once (Ray's CPUs where it runs, else this machine's)."""
    try:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def mean_of(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None) -> torch.Tensor:
    """The mean of the inputs of a tensor a method does not merge (with weights, Σ w_t x_t / Σ w_t)."""
    if weights is None:
        return torch.stack([t.float() for t in tensors]).mean(0)
    total = sum(weights)
    if total == 0:
        raise BadInput("the weights sum to 0, so the tensors the method averages have no mean", "give weights whose sum is not 0")
    return sum(w * t.float() for w, t in zip(weights, tensors)) / total  # type: ignore[return-value]


def _run_lora(repo: RepoView, plan: MergePlan, trees: list[Tree], progress: ProgressFactory, dev: torch.device,
              report: dict[str, Any] | None, executor: Executor | None = None) -> ObjectId:
    """LoRA-native methods per module; tensors peft saves whole (heads, biases) are averaged. A
    rank cap's error goes to ``report["rank_error"]``: overall (‖ΔW − B A‖_F / ‖ΔW‖_F over every
    module) and the worst module's. On ``executor``: modules (and whole tensors) in groups of similar
    bytes, one task each."""
    units = [*lora_modules(trees[0].tensors), *_whole_tensors(trees[0])]
    if executor is not None and executor.name != "local":
        sizes = {u: ("U8", (sum(e.nbytes for k, e in trees[0].tensors.items() if k.startswith(_prefix(trees[0], u))),))
                 for u in units}
        groups = balanced(sizes, executor_slots())
        advance = progress(f"merging with {plan.method} on {executor.name}", len(groups), "tasks")
        parts = []
        for part in executor.map(lora_group, groups, shared=(repo.opener(), plan, dev.type)):
            parts.append(part)
            advance(1)
    else:
        advance = progress(f"merging with {plan.method}", len(trees[0].tensors), "tensors")
        parts = [merge_units(repo, plan, trees, units, dev, advance)]
    entries = {k: v for part in parts for k, v in part[0].items()}
    ranks = {k: v for part in parts for k, v in part[1].items()}
    capped = [c for part in parts for c in part[2]]
    if capped and report is not None:
        energy = sum(energy for _dropped, energy, _error in capped)
        overall = (sum(dropped for dropped, _energy, _error in capped) / energy) ** 0.5 if energy > 0 else 0.0
        report["rank_error"] = {"overall": round(overall, 6), "max": round(max(error for _d, _e, error in capped), 6)}
    return repo.store.write_tree(Tree("lora", merged_lora_config(trees, ranks), {k: entries[k] for k in sorted(entries)}))


def _whole_tensors(tree: Tree) -> list[str]:
    """The tensors of a LoRA adapter that are no factor (saved modules, biases): averaged."""
    factors = {k for m in lora_modules(tree.tensors).values() for k in (m.a_key, m.b_key)}
    return [k for k in tree.tensors if k not in factors]


def _prefix(tree: Tree, unit: str) -> str:
    modules = lora_modules(tree.tensors)
    return modules[unit].a_key.rpartition(".lora_A")[0] if unit in modules else unit


LoraPart = tuple[dict[str, TensorEntry], dict[str, int], list[tuple[float, float, float]]]


def merge_units(repo: RepoView, plan: MergePlan, trees: list[Tree], units: list[str], dev: torch.device,
                advance: Any = lambda n: None) -> LoraPart:
    """Merge and store these modules (and whole tensors) of a LoRA merge: their entries, the merged
    ranks, and each rank cap's (dropped, energy, error)."""
    method = get_method(plan.method)
    modules = lora_modules(trees[0].tensors)
    load = lambda t, key: to_torch(repo.store.read_tensor(t.tensors[key].id)).to(dev)  # noqa: E731
    entries: dict[str, TensorEntry] = {}
    ranks: dict[str, int] = {}
    capped: list[tuple[float, float, float]] = []
    for name in units:
        if name not in modules:
            whole = common_dtype([load(t, name) for t in trees])
            entries[name] = put_tensor(repo, mean_of(whole, plan.weights).to(_out_dtype(plan, whole[0].dtype)).cpu())
            advance(1)
            continue
        m = modules[name]
        a_s, b_s = common_dtype([load(t, m.a_key) for t in trees]), common_dtype([load(t, m.b_key) for t in trees])
        factors = [(a, b, scaling(t.config, name)) for a, b, t in zip(a_s, b_s, trees)]
        result = method(factors, key=name, weights=plan.weights, **plan.params_for(name + ".weight"))
        if isinstance(result, Capped):
            capped.append((result.dropped, result.energy, result.error))
        a, b = result
        entries[m.a_key] = put_tensor(repo, a.to(_out_dtype(plan, factors[0][0].dtype)).cpu())
        entries[m.b_key] = put_tensor(repo, b.to(_out_dtype(plan, factors[0][1].dtype)).cpu())
        ranks[name] = a.shape[0]
        advance(2)
    return entries, ranks, capped


def lora_group(shared: tuple[Any, MergePlan, str], units: list[str]) -> LoraPart:
    """One executor task of a LoRA-space merge (as ``merge_group``)."""
    opener, plan, device = shared
    repo = opener()
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    part = merge_units(repo, plan, trees, units, resolve_device(device))
    repo.store.sync()
    return part


def replay_merge(repo: RepoView, commit: Commit) -> ObjectId:
    """Recompute a merge commit's tree from its ``op`` record."""
    if commit.op.name != "merge" or not commit.op.method:
        raise BadInput("not a merge commit", "replay takes a commit written by `dithub merge`")
    plan = plan_merge(repo, commit.op.inputs, commit.op.method, recorded_params(commit.op.method, commit.op.params),
                      probes=recorded_probes(commit.op))
    return run_merge(repo, plan, device=replay_device(commit.op.params))


DEVICE = "device"
"""The ``execution`` a merge op records when it ran on the device path (a CUDA device: its kernels
and libraries; or the device kernels run elsewhere, as the tests run Triton's interpreter). Absent:
the CPU path, whose results are the same bits on every machine."""


def replay_device(params: Mapping[str, Any]) -> str:
    """Where a recorded merge must run again to give its bits: ``cuda`` if it ran on the device path
    (BadInput without a CUDA device), else the CPU."""
    if params.get("execution") != DEVICE:
        return "cpu"
    if not torch.cuda.is_available():
        raise BadInput("this merge ran on the device path (CUDA), whose sums agree with the CPU's to rounding, not bit for bit",
                       "replay it on a machine with a CUDA device (and Triton), where the same kernels run")
    return "cuda"


def sweep_alpha(repo: RepoView, plan: MergePlan, probe_spec: str, metric: str = "accuracy") -> tuple[float, dict[float, float]]:
    """The final scale with the best probe score (``metric``: accuracy, or a user's
    ``module:function(model, probe) -> float``, higher better; ``eval.best_scale``), and every score
    seen. The merge itself runs once, at scale 1 (methods scale their result last, linearly)."""
    scale = get_method(plan.method).scale_for(plan.params)
    if scale is None:
        raise BadInput(f"method {plan.method!r} has no final scale to tune", "drop --alpha auto")
    if any(scale in values for _glob, values in plan.per_tensor):
        raise BadInput(f"--alpha auto tunes one {scale} for every tensor, and per-tensor parameters set it for some",
                       f"drop --alpha auto, or the per-tensor {scale}")
    if plan.base is None:
        raise BadInput("--alpha auto evaluates the merge on its base checkpoint, and the inputs record none",
                       "commit the adapters with --base NAME")
    probe = load_probe(probe_spec)
    score = load_metric(metric)
    unit = repo.store.read_tree(run_merge(repo, replace(plan, params={**plan.params, scale: 1.0})))
    scaled = ScaledAdapter(repo, repo.store.read_tree(plan.base), unit)
    return best_scale(lambda a: score(scaled.set_scale(a), probe))
