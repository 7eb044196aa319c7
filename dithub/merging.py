"""Merge commits: check the inputs, plan, stream the merge tensor by tensor, commit.

The merge result is ``method(named inputs)``, exactly; the commit's parents are
the target branch's previous head (history only, never re-merged: merging a
merge again would count its inputs twice) followed by the inputs. The ``op``
record holds the method, every parameter (defaults and seed included) and the
input commits, so ``replay_merge`` recomputes the same tree bit for bit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BadInput, IncompatibleAdapters
from .merge import get_method
from .progress import ProgressFactory, no_progress
from .store import Commit, ObjectId, Op, TensorEntry, Tree, nbytes_of
from .store.objects import tensor_header

if TYPE_CHECKING:
    from .repo import Repo


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

    @property
    def op(self) -> Op:
        return Op("merge", self.method, self.params, self.inputs)


def plan_merge(repo: Repo, revs: Sequence[str], method: str, params: Mapping[str, Any] | None = None) -> MergePlan:
    """Check that the inputs can be merged with ``method`` and plan it; writes nothing."""
    m = get_method(method)
    full_params = m.params(params)
    if len(revs) < 2:
        raise BadInput("a merge needs at least two inputs", "name two or more branches or commits")
    ids = [repo.resolve(r) for r in revs]
    if len(set(ids)) != len(ids):
        dup = next(r for r, i in zip(revs, ids) if ids.count(i) > 1)
        raise BadInput(f"{dup!r} is named twice (or points at the same commit as another input)")
    commits = [repo.store.read_commit(i) for i in ids]
    trees = [repo.store.read_tree(c.tree) for c in commits]
    _check_compatible(list(revs), commits, trees)
    first = trees[0]
    specs = {n: (e.dtype, e.shape) for n, e in first.tensors.items()}
    largest = max((nbytes_of("F32", s) for _, s in specs.values()), default=0)
    return MergePlan(method, m.paper, full_params, ids, list(revs), commits[0].base, first.kind, specs,
                     peak_bytes=(len(ids) + 2) * largest)


def _check_compatible(revs: list[str], commits: list[Commit], trees: list[Tree]) -> None:
    bases = {c.base for c in commits}
    if len(bases) > 1:
        detail = ", ".join(f"{r}: {c.base[:12] if c.base else 'none'}" for r, c in zip(revs, commits))
        raise IncompatibleAdapters(f"inputs have different base checkpoints ({detail})",
                                   "rebase them onto one base first (dithub rebase --onto)")
    kinds = {t.kind for t in trees}
    if kinds != {"task_vector"}:
        which = ", ".join(f"{r}: {t.kind}" for r, t in zip(revs, trees))
        raise BadInput(f"merge supports task vectors so far ({which})",
                       "LoRA merging (expansion to ΔW, Core Space, concat) is not implemented yet")
    ref = trees[0]
    for r, t in zip(revs[1:], trees[1:]):
        missing = sorted(set(ref.tensors) ^ set(t.tensors))
        if missing:
            owner = revs[0] if missing[0] in ref.tensors else r
            other = r if owner == revs[0] else revs[0]
            raise IncompatibleAdapters(f"tensor {missing[0]!r} is in {owner} but not in {other}",
                                       "merge adapters that adapt the same tensors")
        for name, e in t.tensors.items():
            e0 = ref.tensors[name]
            if (e.shape, e.dtype) != (e0.shape, e0.dtype):
                raise IncompatibleAdapters(
                    f"tensor {name!r} is {e0.dtype}{list(e0.shape)} in {revs[0]} but {e.dtype}{list(e.shape)} in {r}")


def run_merge(repo: Repo, plan: MergePlan, progress: ProgressFactory = no_progress) -> ObjectId:
    """Stream the planned merge tensor by tensor; store and return the merged tree."""
    from .formats import from_torch, to_torch

    method = get_method(plan.method)
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    advance = progress(f"merging with {plan.method}", len(plan.tensors))
    entries: dict[str, TensorEntry] = {}
    for name, (dtype, shape) in plan.tensors.items():
        vectors = [to_torch(repo.store.read_tensor(t.tensors[name].id)) for t in trees]
        merged = method(vectors, key=name, **plan.params).to(vectors[0].dtype)
        raw = from_torch(merged)
        oid = repo.store.write_parts([tensor_header(raw.dtype, raw.shape), raw.data])
        entries[name] = TensorEntry(oid, raw.dtype, raw.shape)
        advance(1)
    configs = [t.config for t in trees]
    config = configs[0] if all(c == configs[0] for c in configs) else {}
    return repo.store.write_tree(Tree(plan.kind, config, entries))


def replay_merge(repo: Repo, commit: Commit) -> ObjectId:
    """Recompute a merge commit's tree from its ``op`` record."""
    if commit.op.name != "merge" or not commit.op.method:
        raise BadInput("not a merge commit", "replay takes a commit written by `dithub merge`")
    plan = plan_merge(repo, commit.op.inputs, commit.op.method, commit.op.params)
    return run_merge(repo, plan)
