"""Merge plans: check that the inputs can be merged by a method (bases, kinds, names, shapes,
dtypes, weights) and say what the merge will write; nothing is read but trees and commits."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from ...algorithms.defend import REGISTRY as DEFENSES
from ...algorithms.merge import REGISTRY, get_method
from ...algorithms.merge.registry import VECTORS, check_weights
from ...errors import BadInput, IncompatibleAdapters
from ...formats import base_key_lookup, lora_modules
from ...store import Commit, ObjectId, Op, Tree, nbytes_of
from ...store.view import RepoView
from ..delta_specs import FLOATS, delta_specs, promoted

OUT_DTYPES = ("F32", "F16", "BF16", "F64")
DELTAS = ("full", "activation")
"""The method spaces that merge every input as deltas on the base's tensors (a task vector results)."""


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
    per_tensor: tuple[tuple[str, dict[str, Any]], ...] = ()
    """Parameters for some tensors only: (glob on the tensor's name — a LoRA module's ``NAME.weight``
    —, values), the last that matches winning (``-p "density[*.mlp.*]=0.5"``; a recipe's gradients
    and filters, evaluated per tensor)."""

    probes: tuple[ObjectId, ...] = ()
    """Activation methods: the stored probe sets (``probe`` trees) the model runs on, one shared or
    one per input; recorded as the op's data."""
    defense: dict[str, Any] | None = None
    """A defence applied to the result (``method``, its parameters, ``vector``: the tree it
    subtracts, also recorded as the op's data); see ``ops.merge.defend``."""

    @property
    def op(self) -> Op:
        extra = {"dtype": self.dtype, "vectors": self.vectors, "weights": list(self.weights) if self.weights else None,
                 "per_tensor": [[glob, values] for glob, values in self.per_tensor] or None, "defense": self.defense}
        data = [*self.probes, *([self.defense["vector"]] if self.defense else [])]
        return Op("merge", self.method, {**self.params, **{k: v for k, v in extra.items() if v}}, self.inputs, data)

    def params_for(self, name: str) -> dict[str, Any]:
        """The parameters tensor ``name`` merges with."""
        out = dict(self.params)
        for glob, values in self.per_tensor:
            if fnmatchcase(name, glob):
                out.update(values)
        return out


def plan_merge(repo: RepoView, revs: Sequence[str], method: str, params: Mapping[str, Any] | None = None, *,
               min_inputs: int = 2, probes: Sequence[ObjectId] | None = None) -> MergePlan:
    """Check that the inputs can be merged with ``method`` and plan it; writes nothing (``probes``:
    stored probe trees, for activation methods; None: not checked, as for ``--dry-run``)."""
    m = get_method(method)
    if m.space == "activation" and probes is not None and len(probes) not in (1, len(revs)):
        raise BadInput(f"{method} runs the model on probe sets: give one --probe for all inputs, or one per input "
                       f"({len(revs)}), not {len(probes)}", "pass --probe FILE (safetensors with 'inputs')")
    probes = tuple(probes or ())
    if m.space != "activation" and probes:
        raise BadInput(f"{method} reads no probe sets")
    if m.sequential:
        raise BadInput(f"{method} merges sequentially and has no plan", f"run: dithub merge --method {method} --into BRANCH REV…")
    params = dict(params or {})
    dtype = params.pop("dtype", None)
    defense = params.pop("defense", None)
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
    per_tensor = _per_tensor(m, params, params.pop("per_tensor", None))
    params.pop("rank_error", None)  # what a rank cap dropped, recorded by the merge: recomputed, not an input
    params.pop("execution", None)  # where it ran: replay_device() reads it
    full_params = m.params(params)
    if len(revs) < min_inputs:
        raise BadInput("a merge needs at least two inputs", "name two or more branches or commits")
    weights = check_weights(m, weights, len(revs))
    if m.space == "activation" and per_tensor:
        raise BadInput(f"{method} solves every linear layer with the same parameters: it takes no per-tensor parameters")
    if per_tensor and m.sequential:
        raise BadInput(f"{method} merges whole models one input at a time: it takes no per-tensor parameters")
    ids = [repo.resolve(r) for r in revs]
    if len(set(ids)) != len(ids):
        dup = next(r for r, i in zip(revs, ids) if ids.count(i) > 1)
        raise BadInput(f"{dup!r} is named twice (or points at the same commit as another input)")
    commits = [repo.store.read_commit(i) for i in ids]
    trees = [repo.store.read_tree(c.tree) for c in commits]
    if m.space == "activation" and any(c.base is None for c in commits):
        rev = next(r for r, c in zip(revs, commits) if c.base is None)
        raise BadInput(f"{method} runs the base model on probe sets, and {rev} records no base checkpoint",
                       "commit the inputs with --base NAME")
    if m.space in DELTAS and (len({t.kind for t in trees}) > 1 or trees[0].kind == "peft"):  # deltas keyed by base names
        plan = replace(_plan_mixed(repo, list(revs), ids, commits, trees, m, full_params, dtype, vectors), weights=weights,
                       per_tensor=per_tensor, probes=probes)
        return replace(plan, defense=check_defense(repo, plan, defense)) if defense is not None else plan
    _check_compatible(list(revs), commits, trees, m.space)
    first = trees[0]
    expand = m.space in DELTAS and first.kind == "lora"
    base = repo.store.read_tree(commits[0].base) if first.kind in ("full", "peft") and commits[0].base else None
    each = [delta_specs(t, base) if m.space in DELTAS else {n: (e.dtype, e.shape) for n, e in t.tensors.items()} for t in trees]
    specs = {n: (promoted([s[n][0] for s in each]), shape) for n, (_dtype, shape) in each[0].items()}
    if expand and commits[0].base is None and set(specs) - {name + ".weight" for name in lora_modules(first.tensors)}:
        raise IncompatibleAdapters(f"{revs[0]} saves whole tensors (modules_to_save or biases) that are deltas only against a base",
                                   "commit the adapters with --base NAME to merge them in full space")
    largest = max((nbytes_of("F32", s) for _, s in specs.values()), default=0)
    plan = MergePlan(method, m.paper, full_params, ids, list(revs), commits[0].base,
                     "task_vector" if m.space in DELTAS else first.kind, specs, peak_bytes=(len(ids) + 2) * largest, dtype=dtype,
                     vectors=vectors, weights=weights, per_tensor=per_tensor, probes=probes)
    return replace(plan, defense=check_defense(repo, plan, defense)) if defense is not None else plan


def check_defense(repo: RepoView, plan: MergePlan, defense: Any) -> dict[str, Any]:
    """A defence spec (``{"method", "vector": tree id, parameters…}``) checked against the plan: a
    registered method, valid parameters, and a vector on the merge's base whose tensors are tensors
    of the merge, of the same shapes. Returns it with every parameter filled in."""
    if not isinstance(defense, dict) or not isinstance(defense.get("method"), str) or not isinstance(defense.get("vector"), str):
        raise BadInput("a defence names its method and the vector it subtracts", "e.g. --defend ibvs --defense-vector REF")
    method = DEFENSES.lookup(defense["method"])
    params = method.params({k: v for k, v in defense.items() if k not in ("method", "vector")})
    if plan.kind != "task_vector":
        raise BadInput(f"--defend {method.name} subtracts a vector from a full-space merge, and {plan.method} writes {plan.kind} "
                       "adapters", "merge with a full-space method (task_arithmetic, ties, iso_c, …)")
    tree = repo.store.read_tree(defense["vector"])
    if tree.kind not in ("task_vector", "lora"):
        raise BadInput(f"the defence vector is a {tree.kind} tree, not a task vector", "commit the injected backdoor vector as one")
    defense_names(repo, plan, tree)
    return {"method": method.name, **params, "vector": defense["vector"]}


def defense_names(repo: RepoView, plan: MergePlan, tree: Tree) -> dict[str, str]:
    """The merge's tensor each tensor of a defence vector applies to (merged tensor -> the vector's
    name): the same name, or through the base's names where the merge keys its tensors by the
    base's (inputs of several kinds); IncompatibleAdapters for a tensor the merge lacks or of
    another shape."""
    base = repo.store.read_tree(plan.base) if plan.base else None
    lookup = base_key_lookup(base) if base is not None and plan.sources else (lambda name: name)
    out = {}
    for name, (_dtype, shape) in delta_specs(tree, base).items():
        target = lookup(name) or name
        if target not in plan.tensors or tuple(plan.tensors[target][1]) != tuple(shape):
            raise IncompatibleAdapters(f"the defence vector's tensor {name!r} {list(shape)} is not a tensor of the merge",
                                       "make the injected vector on the merge's base, keyed as the inputs are")
        out[target] = name
    return out


def recorded_probes(op: Op) -> list[ObjectId]:
    """The probe trees of a merge op's data (its defence vector, if any, is not one)."""
    vector = (op.params.get("defense") or {}).get("vector")
    return [d for d in op.data if d != vector]


def _per_tensor(m: Any, given: Mapping[str, Any], rules: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Per-tensor parameter rules, each checked as the method checks its parameters (on top of the
    ones given for every tensor) and typed as they are."""
    if rules is None:
        return ()
    if not isinstance(rules, (list, tuple)) or not all(isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], str)
                                                       and isinstance(r[1], dict) for r in rules):
        raise BadInput("per_tensor must be a list of [glob, {parameter: value}]", 'e.g. -p "density[*.mlp.*]=0.5"')
    out = []
    for glob, values in rules:
        if not glob or len(glob) > 1024:
            raise BadInput(f"per-tensor pattern {glob!r} is empty or too long")
        full = m.params({**given, **values})
        out.append((glob, {k: full[k] for k in values}))
    return tuple(out)


def _plan_mixed(repo: RepoView, revs: list[str], ids: list[ObjectId], commits: list[Commit], trees: list[Tree],
                m: Any, params: dict[str, Any], dtype: str | None, vectors: str | None) -> MergePlan:
    """LoRA adapters, task vectors and fine-tunes together: all become deltas on the base's checkpoint names."""
    bases = {c.base for c in commits}
    if len(bases) > 1 or None in bases:
        raise IncompatibleAdapters("LoRA adapters, task vectors and fine-tunes merge together only through their shared base "
                                   "checkpoint", "commit them with --base NAME (the same base)")
    base = commits[0].base
    assert base is not None  # refused above
    base_tree = repo.store.read_tree(base)
    lookup = base_key_lookup(base_tree)
    sources, specs = [], []
    for rev, tree in zip(revs, trees):
        own = delta_specs(tree, base_tree)
        mapping = {}
        for name in own:
            key = lookup(name)
            if key is None:
                raise IncompatibleAdapters(f"tensor {name!r} of {rev} has no matching tensor in the base checkpoint")
            mapping[key] = name
        sources.append(mapping)
        specs.append({k: own[v] for k, v in mapping.items()})
    _agree(revs, specs, "base tensor")
    largest = max((nbytes_of("F32", sh) for _, sh in specs[0].values()), default=0)
    return MergePlan(m.name, m.paper, params, ids, revs, commits[0].base, "task_vector", specs[0],
                     peak_bytes=(len(ids) + 2) * largest, dtype=dtype, sources=sources, vectors=vectors)


def _check_compatible(revs: list[str], commits: list[Commit], trees: list[Tree], space: str) -> None:
    bases = {c.base for c in commits}
    if len(bases) > 1:
        detail = ", ".join(f"{r}: {c.base[:12] if c.base else 'none'}" for r, c in zip(revs, commits))
        raise IncompatibleAdapters(f"inputs have different base checkpoints ({detail})",
                                   "rebase them onto one base first (dithub rebase --onto)")
    kinds = {t.kind for t in trees}
    which = ", ".join(f"{r}: {t.kind}" for r, t in zip(revs, trees))
    if len(kinds) > 1:
        raise BadInput(f"inputs mix adapter kinds ({which})",
                       "LoRA-native methods take LoRA adapters only; full-space methods merge them through their base")
    if space == "lora" and kinds != {"lora"}:
        raise BadInput(f"method cannot merge these inputs ({which})",
                       "LoRA-native methods (" + ", ".join(REGISTRY.having("lora")) + ") take LoRA adapters; the full-space "
                       "ones (" + ", ".join(REGISTRY.having("full")) + ") take task vectors, LoRA adapters (as ΔW) and "
                       "fine-tunes (as θ − θ_base)")
    _agree(revs, [_merge_shapes(t) for t in trees], "tensor")


def _agree(revs: list[str], specs: list[dict[str, tuple[str, tuple[int, ...]]]], noun: str) -> None:
    """IncompatibleAdapters unless every input has the same tensors as the first, of the same shapes
    (float dtypes may differ: they are promoted)."""
    for r, spec in zip(revs[1:], specs[1:]):
        odd = sorted(set(specs[0]) ^ set(spec))
        if odd:
            owner, other = (revs[0], r) if odd[0] in specs[0] else (r, revs[0])
            raise IncompatibleAdapters(f"{noun} {odd[0]!r} is in {owner} but not in {other}",
                                       "merge adapters that change the same tensors")
        for name, got in spec.items():
            first = specs[0][name]
            if got[1] != first[1] or (got[0] != first[0] and not {got[0], first[0]} <= FLOATS):
                raise IncompatibleAdapters(f"{noun} {name!r} is {_fmt(first)} in {revs[0]} but {_fmt(got)} in {r}",
                                           "merge adapters of the same shapes; float dtypes may differ, other dtypes must agree")


def _fmt(spec: tuple[str, tuple[int, ...]]) -> str:
    return f"{spec[0]} [{', '.join('r' if d == -1 else str(d) for d in spec[1])}]"


def _merge_shapes(tree: Tree) -> dict[str, tuple[str, tuple[int, ...]]]:
    """What must agree between inputs: every tensor's dtype and shape, except a LoRA's rank."""
    out = {n: (e.dtype, e.shape) for n, e in tree.tensors.items()}
    if tree.kind == "lora":
        for m in lora_modules(tree.tensors).values():
            a, b = tree.tensors[m.a_key], tree.tensors[m.b_key]
            out[m.a_key] = (a.dtype, (-1, *a.shape[1:]))  # rank may differ
            out[m.b_key] = (b.dtype, (*b.shape[:-1], -1))
    return out


def merged_lora_config(trees: list[Tree], ranks: dict[str, int]) -> dict[str, Any]:
    """The first input's config with rank = alpha = the merged rank (scale 1) per module."""
    config = dict(trees[0].config)
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {re.escape(name): rank for name, rank in ranks.items() if rank != r}
    config.update(r=r, lora_alpha=r, rank_pattern=pattern, alpha_pattern=dict(pattern), use_rslora=False)
    return config
