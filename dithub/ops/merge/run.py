"""Merge commits: check the inputs, plan, stream the merge tensor by tensor, commit.

The merge result is ``method(named inputs)``, exactly; the commit's parents are
the target branch's previous head (history only, never re-merged: merging a
merge again would count its inputs twice) followed by the inputs. The ``op``
record holds the method, every parameter (defaults and seed included) and the
input commits, so ``replay_merge`` recomputes the same tree bit for bit.
"""
from __future__ import annotations

import functools

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ...errors import BadInput, IncompatibleAdapters
from ...formats import base_key_lookup, lora_modules, scaling
from ...formats.lora import strip_prefix
from ...formats.merge_into import lora_delta
from ...formats.torch_io import TORCH_DTYPES, from_torch, to_torch
from ...algorithms.merge import REGISTRY, get_method
from ...algorithms.merge.lora_space import Capped
from ...algorithms.merge.registry import VECTORS, check_weights
from ...progress import ProgressFactory, no_progress
from ...store import Commit, ObjectId, Op, TensorEntry, Tree, nbytes_of
from ...kernels.device import DeviceMerge, to_host, triton_kernels
from ...kernels.pipeline import stream

if TYPE_CHECKING:
    from ...repo import Repo

OUT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class MergePlan:
    """What a merge will do; printable (``--dry-run``) and serializable."""

    method: str
    paper: str
    params: dict[str, Any]
    inputs: list[ObjectId]
    names: list[str]
    base: ObjectId | None
    kind: str
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    peak_bytes: int
    dtype: str | None = None
    sources: list[dict[str, str]] | None = None
    """Per input, output tensor name -> the input's own name (mixed LoRA and task vectors)."""
    weights: list[float] | None = None
    """Per-input weights (None: all 1, the unweighted merge); recorded in the op."""
    vectors: str | None = None
    """For full-space methods: ``method`` (tensors the method does not decompose merged as its
    reference code does) or ``mean`` (averaged: merges recorded before the key existed); see
    ``merge.registry.VECTORS``. None for methods it does not apply to."""

    @property
    def op(self) -> Op:
        extra: dict[str, Any] = {"dtype": self.dtype} if self.dtype else {}
        if self.vectors is not None:
            extra["vectors"] = self.vectors
        if self.weights is not None:
            extra["weights"] = list(self.weights)
        return Op("merge", self.method, {**self.params, **extra}, self.inputs)

    def out_dtype(self, like: torch.dtype) -> torch.dtype:
        return TORCH_DTYPES[self.dtype] if self.dtype else like


def plan_merge(repo: Repo, revs: Sequence[str], method: str, params: Mapping[str, Any] | None = None, *,
               min_inputs: int = 2) -> MergePlan:
    """Check that the inputs can be merged with ``method`` and plan it; writes nothing."""
    if method == "opcm":
        raise BadInput("opcm merges sequentially and has no plan", "run: dithub merge --method opcm --into BRANCH REV…")
    m = get_method(method)
    params = dict(params or {})
    dtype = params.pop("dtype", None)
    if dtype is not None and dtype not in OUT_DTYPES:
        raise BadInput(f"--dtype {dtype!r} is not supported", f"choose one of {', '.join(OUT_DTYPES)}")
    vectors = params.pop("vectors", None)
    if m.chooses_vectors:
        vectors = vectors or "method"
        if vectors not in VECTORS:
            raise BadInput(f"parameter 'vectors' of {method!r} is {vectors!r}, not one of {', '.join(VECTORS)}")
    elif vectors is not None:
        raise BadInput(f"method {method!r} has no parameter 'vectors'",
                       "only full-space methods choose how the tensors they do not decompose merge")
    weights = params.pop("weights", None)
    params.pop("rank_error", None)  # what a rank cap dropped, recorded by the merge: recomputed, not an input
    params.pop("execution", None)  # where it ran: replay_device() reads it
    full_params = m.params(params)
    if len(revs) < min_inputs:
        raise BadInput("a merge needs at least two inputs", "name two or more branches or commits")
    weights = check_weights(m, weights, len(revs))
    ids = [repo.resolve(r) for r in revs]
    if len(set(ids)) != len(ids):
        dup = next(r for r, i in zip(revs, ids) if ids.count(i) > 1)
        raise BadInput(f"{dup!r} is named twice (or points at the same commit as another input)")
    commits = [repo.store.read_commit(i) for i in ids]
    trees = [repo.store.read_tree(c.tree) for c in commits]
    if m.space == "full" and {t.kind for t in trees} == {"lora", "task_vector"}:
        return replace(_plan_mixed(repo, list(revs), ids, commits, trees, m, full_params, dtype, vectors), weights=weights)
    _check_compatible(list(revs), commits, trees, m.space)
    first = trees[0]
    expand = m.space == "full" and first.kind == "lora"
    each = [expanded_specs(t) if expand else {n: (e.dtype, e.shape) for n, e in t.tensors.items()} for t in trees]
    specs = {n: (promoted([s[n][0] for s in each]), shape) for n, (_dtype, shape) in each[0].items()}
    if expand and commits[0].base is None and any(n not in _module_outputs(first) for n in specs):
        raise IncompatibleAdapters(
            f"{revs[0]} saves whole tensors (modules_to_save or biases) that are deltas only against a base",
            "commit the adapters with --base NAME to merge them in full space")
    largest = max((nbytes_of("F32", s) for _, s in specs.values()), default=0)
    return MergePlan(method, m.paper, full_params, ids, list(revs), commits[0].base,
                     "task_vector" if expand else first.kind, specs, peak_bytes=(len(ids) + 2) * largest, dtype=dtype,
                     vectors=vectors, weights=weights)


def _plan_mixed(repo: Repo, revs: list[str], ids: list[ObjectId], commits: list[Commit], trees: list[Tree],
                m: Any, params: dict[str, Any], dtype: str | None, vectors: str | None) -> MergePlan:
    """LoRA adapters and task vectors together: both become deltas on the base's checkpoint names."""
    bases = {c.base for c in commits}
    if len(bases) > 1 or None in bases:
        raise IncompatibleAdapters("a LoRA adapter and a task vector merge only through their shared base checkpoint",
                                   "commit both with --base NAME (the same base)")
    lookup = base_key_lookup(repo.store.read_tree(commits[0].base))
    sources, specs = [], []
    for rev, tree in zip(revs, trees):
        own = expanded_specs(tree) if tree.kind == "lora" else {n: (e.dtype, e.shape) for n, e in tree.tensors.items()}
        mapping = {}
        for name in own:
            key = lookup(name)
            if key is None:
                raise IncompatibleAdapters(f"tensor {name!r} of {rev} has no matching tensor in the base checkpoint")
            mapping[key] = name
        sources.append(mapping)
        specs.append({k: own[v] for k, v in mapping.items()})
    for rev, spec in zip(revs[1:], specs[1:]):
        odd = sorted(set(specs[0]) ^ set(spec))
        if odd:
            raise IncompatibleAdapters(f"base tensor {odd[0]!r} is changed by only one of {revs[0]} and {rev}",
                                       "merge adapters that change the same weights")
        for name, (_d, shape) in spec.items():
            if shape != specs[0][name][1]:
                raise IncompatibleAdapters(f"base tensor {name!r}: {list(specs[0][name][1])} in {revs[0]} but {list(shape)} in {rev}")
    largest = max((nbytes_of("F32", sh) for _, sh in specs[0].values()), default=0)
    return MergePlan(m.name, m.paper, params, ids, revs, commits[0].base, "task_vector", specs[0],
                     peak_bytes=(len(ids) + 2) * largest, dtype=dtype, sources=sources, vectors=vectors)


def _module_outputs(tree: Tree) -> set[str]:
    return {name + ".weight" for name in lora_modules(tree.tensors)}


def expanded_specs(tree: Tree) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Output tensors of a LoRA expanded to ΔW: one per module, plus the whole tensors."""
    modules = lora_modules(tree.tensors)
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, m in modules.items():
        a, b = tree.tensors[m.a_key], tree.tensors[m.b_key]
        transposed = m.embedding or tree.config.get("fan_in_fan_out")
        specs[name + ".weight"] = (b.dtype, (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1]))
    factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
    for key, e in tree.tensors.items():
        if key not in factor_keys:
            specs[strip_prefix(key)] = (e.dtype, e.shape)
    return specs


def _check_compatible(revs: list[str], commits: list[Commit], trees: list[Tree], space: str) -> None:
    bases = {c.base for c in commits}
    if len(bases) > 1:
        detail = ", ".join(f"{r}: {c.base[:12] if c.base else 'none'}" for r, c in zip(revs, commits))
        raise IncompatibleAdapters(f"inputs have different base checkpoints ({detail})",
                                   "rebase them onto one base first (dithub rebase --onto)")
    kinds = {t.kind for t in trees}
    if len(kinds) > 1:
        which = ", ".join(f"{r}: {t.kind}" for r, t in zip(revs, trees))
        raise BadInput(f"inputs mix adapter kinds ({which})",
                       "LoRA-native methods take LoRA adapters only; full-space methods merge both through their base")
    want = "lora" if space == "lora" else next(iter(kinds))
    if kinds != {want} or want == "full":
        which = ", ".join(f"{r}: {t.kind}" for r, t in zip(revs, trees))
        raise BadInput(f"method cannot merge these inputs ({which})",
                       "LoRA-native methods (" + ", ".join(n for n, m in REGISTRY.items() if m.space == "lora")
                       + ") take LoRA adapters; the others take task vectors or LoRA adapters (expanded to ΔW)")
    shapes = [_merge_shapes(t) for t in trees]
    for r, sh in zip(revs[1:], shapes[1:]):
        missing = sorted(set(shapes[0]) ^ set(sh))
        if missing:
            owner = revs[0] if missing[0] in shapes[0] else r
            other = r if owner == revs[0] else revs[0]
            raise IncompatibleAdapters(f"tensor {missing[0]!r} is in {owner} but not in {other}",
                                       "merge adapters that adapt the same tensors")
        for name, got in sh.items():
            first = shapes[0][name]
            if got[1] != first[1] or (got[0] != first[0] and not {got[0], first[0]} <= FLOAT_DTYPES):
                raise IncompatibleAdapters(f"tensor {name!r} is {_fmt(first)} in {revs[0]} but {_fmt(got)} in {r}",
                                           "merge adapters of the same shapes; float dtypes may differ, other dtypes must agree")


FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


def _fmt(spec: tuple[str, tuple[int, ...]]) -> str:
    return f"{spec[0]} [{', '.join('r' if d == -1 else str(d) for d in spec[1])}]"


def common_dtype(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inputs of different float dtypes, promoted to one (the same tensors when they agree, so a
    merge of same-dtype inputs computes as it always did)."""
    if len({t.dtype for t in tensors}) <= 1:
        return tensors
    out = _promote([t.dtype for t in tensors])
    return [t.to(out) for t in tensors]


def _promote(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    return functools.reduce(torch.promote_types, dtypes)


def promoted(dtypes: Sequence[str]) -> str:
    """The dtype inputs of these (float) dtypes are merged in: the first if all agree, else their
    promotion (BF16 and F16 give F32)."""
    if len(set(dtypes)) == 1:
        return dtypes[0]
    out = _promote([TORCH_DTYPES[d] for d in dtypes])
    return next(name for name, t in TORCH_DTYPES.items() if t == out)


def _merge_shapes(tree: Tree) -> dict[str, tuple[str, tuple[int, ...]]]:
    """What must agree between inputs: every tensor's dtype and shape, except a LoRA's rank."""
    out = {n: (e.dtype, e.shape) for n, e in tree.tensors.items()}
    if tree.kind == "lora":
        for m in lora_modules(tree.tensors).values():
            a, b = tree.tensors[m.a_key], tree.tensors[m.b_key]
            out[m.a_key] = (a.dtype, (-1, *a.shape[1:]))  # rank may differ
            out[m.b_key] = (b.dtype, (*b.shape[:-1], -1))
    return out


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


def run_merge(repo: Repo, plan: MergePlan, progress: ProgressFactory = no_progress, device: str = "cpu",
              merger: DeviceMerge | None = None, busy: dict[str, float] | None = None,
              report: dict[str, Any] | None = None) -> ObjectId:
    """Stream the planned merge (tensor by tensor, or module by module) on ``device``; store the tree.

    On a GPU (or with an explicit ``merger``) the stages overlap (``dithub.kernels.pipeline``): the
    inputs of tensor k+1 are staged on the device while tensor k merges and tensor k−1 is copied back
    and stored, so device memory holds about three tensors' inputs. On the CPU they run in turn.
    ``busy`` collects each stage's working seconds (load, compute, store) for benchmarks;
    ``report`` what the op should record besides its inputs (a rank cap's ``rank_error``).
    """
    dev = resolve_device(device)
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    if plan.kind == "lora":
        if report is not None and dev.type == "cuda":
            report["execution"] = DEVICE
        return _run_lora(repo, plan, trees, progress, dev, report)
    method = get_method(plan.method)
    if merger is None and dev.type == "cuda" and plan.weights is None:  # weighted merges: the torch methods, on the device
        merger = DeviceMerge(dev, triton_kernels(dev))
    advance = progress(f"merging with {plan.method}", len(plan.tensors))
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
            merged = merger.merge(method, plan.params, loaded, name)
        elif not method.applies_to(shape, plan.vectors, name):  # non-matrices for SVD methods (and 1-D tensors of old merges): averaged
            merged = mean_of(loaded, plan.weights)
            if method.matrices_only and plan.vectors == "method" and method.scale_param:  # α on the whole merged vector
                merged = merged * float(plan.params[method.scale_param])
        else:
            merged = method(loaded, key=name, weights=plan.weights, **plan.params)
        return to_host(merged.to(plan.out_dtype(TORCH_DTYPES[dtype])))

    def store(name: str, result: Any) -> None:
        entries[name] = put_tensor(repo, result())
        advance(1)

    stream(plan.tensors, load, compute, store, depth=CPU_PIPELINE_DEPTH if merger is None else 1, busy=busy)
    if report is not None and (dev.type == "cuda" or (merger is not None and merger.used_kernels)):
        report["execution"] = DEVICE
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) and trees[0].kind == plan.kind else {}
    return repo.store.write_tree(Tree(plan.kind, config, entries))


def mean_of(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None) -> torch.Tensor:
    """The mean of the inputs of a tensor a method does not merge (with weights, Σ w_t x_t / Σ w_t)."""
    if weights is None:
        return torch.stack([t.float() for t in tensors]).mean(0)
    total = sum(weights)
    if total == 0:
        raise BadInput("the weights sum to 0, so the tensors the method averages have no mean", "give weights whose sum is not 0")
    return sum(w * t.float() for w, t in zip(weights, tensors)) / total  # type: ignore[return-value]


def delta_loader(repo: Repo, tree: Tree, base: ObjectId | None) -> Callable[[str], torch.Tensor]:
    """Each output tensor of an input as a delta: as stored, ΔW of a LoRA module, or whole − base."""
    def stored(key: str) -> torch.Tensor:
        return to_torch(repo.store.read_tensor(tree.tensors[key].id))

    if tree.kind != "lora":
        return stored
    modules = {name + ".weight": m for name, m in lora_modules(tree.tensors).items()}
    whole = {strip_prefix(k): k for k in tree.tensors}
    base_tree = repo.store.read_tree(base) if base else None
    lookup = base_key_lookup(base_tree) if base_tree else None

    def load(name: str) -> torch.Tensor:
        if name in modules:
            m = modules[name]
            return lora_delta(tree.config, m, stored(m.a_key), stored(m.b_key))
        assert base_tree is not None and lookup is not None
        base_key = lookup(name)
        if base_key is None:
            raise IncompatibleAdapters(f"adapter tensor {name!r} has no matching tensor in the base checkpoint")
        return stored(whole[name]).float() - to_torch(repo.store.read_tensor(base_tree.tensors[base_key].id)).float()

    return load


def put_tensor(repo: Repo, tensor: Any) -> TensorEntry:
    raw = from_torch(tensor)
    return TensorEntry(repo.store.write_tensor(raw.dtype, raw.shape, raw.data), raw.dtype, raw.shape)


def _run_lora(repo: Repo, plan: MergePlan, trees: list[Tree], progress: ProgressFactory, dev: torch.device,
              report: dict[str, Any] | None) -> ObjectId:
    """LoRA-native methods per module; tensors peft saves whole (heads, biases) are averaged. A
    rank cap's error goes to ``report["rank_error"]``: overall (‖ΔW − B A‖_F / ‖ΔW‖_F over every
    module) and the worst module's."""
    method = get_method(plan.method)
    modules = lora_modules(trees[0].tensors)
    load = lambda t, key: to_torch(repo.store.read_tensor(t.tensors[key].id)).to(dev)  # noqa: E731
    advance = progress(f"merging with {plan.method}", len(trees[0].tensors))
    entries: dict[str, TensorEntry] = {}
    ranks: dict[str, int] = {}
    capped: list[Capped] = []
    for name, m in modules.items():
        a_s, b_s = common_dtype([load(t, m.a_key) for t in trees]), common_dtype([load(t, m.b_key) for t in trees])
        factors = [(a, b, scaling(t.config, name)) for a, b, t in zip(a_s, b_s, trees)]
        result = method(factors, key=name, weights=plan.weights, **plan.params)
        if isinstance(result, Capped):
            capped.append(result)
        a, b = result
        entries[m.a_key] = put_tensor(repo, a.to(plan.out_dtype(factors[0][0].dtype)).cpu())
        entries[m.b_key] = put_tensor(repo, b.to(plan.out_dtype(factors[0][1].dtype)).cpu())
        ranks[name] = a.shape[0]
        advance(2)
    factor_keys = {k for m in modules.values() for k in (m.a_key, m.b_key)}
    for key in trees[0].tensors:
        if key not in factor_keys:
            whole = common_dtype([load(t, key) for t in trees])
            mean = mean_of(whole, plan.weights)
            entries[key] = put_tensor(repo, mean.to(plan.out_dtype(whole[0].dtype)).cpu())
            advance(1)
    if capped and report is not None:
        energy = sum(c.energy for c in capped)
        overall = (sum(c.dropped for c in capped) / energy) ** 0.5 if energy > 0 else 0.0
        report["rank_error"] = {"overall": round(overall, 6), "max": round(max(c.error for c in capped), 6)}
    return repo.store.write_tree(Tree("lora", _merged_lora_config(trees, ranks), entries))


def _merged_lora_config(trees: list[Tree], ranks: dict[str, int]) -> dict[str, Any]:
    """The first input's config with rank = alpha = the merged rank (scale 1) per module."""
    config = dict(trees[0].config)
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {re.escape(name): rank for name, rank in ranks.items() if rank != r}
    config.update(r=r, lora_alpha=r, rank_pattern=pattern, alpha_pattern=dict(pattern), use_rslora=False)
    return config


def replay_merge(repo: Repo, commit: Commit) -> ObjectId:
    """Recompute a merge commit's tree from its ``op`` record."""
    if commit.op.name != "merge" or not commit.op.method:
        raise BadInput("not a merge commit", "replay takes a commit written by `dithub merge`")
    from ...algorithms.merge.registry import recorded_params

    plan = plan_merge(repo, commit.op.inputs, commit.op.method, recorded_params(commit.op.method, commit.op.params))
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


AUTO_GRID = tuple(round(0.1 * i, 1) for i in range(1, 16))
"""Final scales ``--alpha auto`` tries (0.1 … 1.5)."""


def sweep_alpha(repo: Repo, plan: MergePlan, probe_spec: str, metric: str = "accuracy") -> tuple[float, dict[float, float]]:
    """The final scale with the best probe score (``metric``: accuracy, or a user's
    ``module:function(model, probe) -> float``, higher better), and every score seen.

    The merge itself runs once, at scale 1 (methods scale their result last, linearly); each
    candidate only rewrites the model's adapted weights as W + a·ΔW and scores the probe.
    """
    from dataclasses import replace

    from ...eval import ScaledAdapter, load_metric, load_probe

    scale = get_method(plan.method).scale_for(plan.params)
    if scale is None:
        raise BadInput(f"method {plan.method!r} has no final scale to tune", "drop --alpha auto")
    if plan.base is None:
        raise BadInput("--alpha auto evaluates the merge on its base checkpoint, and the inputs record none",
                       "commit the adapters with --base NAME")
    probe = load_probe(probe_spec)
    score = load_metric(metric)
    unit = repo.store.read_tree(run_merge(repo, replace(plan, params={**plan.params, scale: 1.0})))
    scaled = ScaledAdapter(repo, repo.store.read_tree(plan.base), unit)
    accuracies = {a: score(scaled.set_scale(a), probe) for a in AUTO_GRID}
    best = max(AUTO_GRID, key=lambda a: accuracies[a])  # the smallest scale among the best
    return best, accuracies
