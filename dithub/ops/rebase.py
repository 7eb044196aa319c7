"""The rebase executor: move branches' adapters onto another base checkpoint.

``Repo.rebase`` plans which commits to rewrite (a branch's first-parent run of commits on the old
base, or only its tip), prepares one ``Transport`` per old base (the expensive part: permutations,
gradient signs, activations — computed once for every branch rebased in the same run), rewrites
each adapter tensor by tensor, writes new commits (``base`` = the new base, ``op`` = rebase with the
method, its parameters and the original commit) and moves each branch with compare-and-swap.
The old heads stay reachable through the reflog and ``ORIG_HEAD``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import BadInput, IncompatibleAdapters
from ..eval import (ScaledAdapter, best_scale, linear_activations, load_base_model, load_metric, load_probe,
                    majority_descent_signs)
from ..formats import plan_edits
from ..formats.hf_names import names_of
from ..formats.merge_into import lora_delta
from ..formats.peft_kinds import not_yet
from ..formats.torch_io import to_torch
from .branches import existing, target_branch
from .commit import base_reference, named_base
from .deltas import put_tensor
from .executor import Executor
from .sign import sign_if_asked
from ..algorithms.params import scale_value
from ..progress import ProgressFactory, no_progress
from ..algorithms.rebase import RebaseContext, RebaseMethod, Transport, get_rebase
from ..store import Commit, ObjectId, Op, Tree, TensorEntry
from ..store.view import RepoView
from ..store.refs import HEADS


class _Tensors(Mapping[str, torch.Tensor]):
    """A base's tensors by checkpoint name, read from the store on first use (and kept)."""

    def __init__(self, repo: RepoView, tree: Tree) -> None:
        self._repo, self._tree = repo, tree
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            if name not in self._tree.tensors:
                raise KeyError(name)
            self._cache[name] = to_torch(self._repo.store.read_tensor(self._tree.tensors[name].id)).float()
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree.tensors)

    def __len__(self) -> int:
        return len(self._tree.tensors)


@dataclass
class _Job:
    """One branch to rebase: its old head and the commits to rewrite, oldest first."""

    branch: str
    head: ObjectId
    old_base: ObjectId
    commits: list[ObjectId]


@dataclass(frozen=True)
class RebaseResult:
    branch: str
    old_head: ObjectId
    new_head: ObjectId
    rewritten: list[tuple[ObjectId, ObjectId]]
    """(original commit, new commit), oldest first."""
    alphas: dict[ObjectId, float] = field(default_factory=dict)
    """The final scale used for each new commit."""


def _jobs(repo: RepoView, branches: list[str], new_base: ObjectId, tip_only: bool) -> list[_Job]:
    jobs = []
    for branch in branches:
        head = existing(repo, HEADS, branch, "branch")
        tip = repo.store.read_commit(head)
        if tip.base is None:
            raise BadInput(f"branch {branch!r}: its head records no base checkpoint", "commit it with --base NAME first")
        if tip.base == new_base:
            raise BadInput(f"branch {branch!r} is already on that base", "nothing to rebase")
        chain = [head]
        if not tip_only:
            commit = tip
            while commit.parents and (parent := repo.store.read_commit(commit.parents[0])).base == tip.base:
                chain.append(commit.parents[0])
                commit = parent
        jobs.append(_Job(branch, head, tip.base, chain[::-1]))
    return jobs


def _keys(base: Tree, trees: list[Tree]) -> list[str]:
    """The base tensors any of ``trees`` changes."""
    keys: set[str] = set()
    for tree in trees:
        if tree.kind == "full":
            raise BadInput("a commit holds a full checkpoint, not an adapter", "rebase moves adapters; add checkpoints with base add")
        if tree.kind == "peft":
            raise not_yet(tree.config, "rebased")
        keys.update(plan_edits(base, tree))
    return sorted(keys)


def _check_shapes(method: RebaseMethod, old: Tree, new: Tree, keys: list[str], names: tuple[str, str]) -> None:
    for key in keys:
        if key not in new.tensors:
            raise IncompatibleAdapters(f"base {names[1]} has no tensor {key!r} (the adapters change it in {names[0]})",
                                       "the two bases are different architectures")
        a, b = old.tensors[key].shape, new.tensors[key].shape
        if method.equal_widths and tuple(a) != tuple(b):
            raise IncompatibleAdapters(f"{key!r} is {list(a)} in {names[0]} but {list(b)} in {names[1]}",
                                       f"{method.name} needs equal widths; theseus transports across widths")


def prepare(repo: RepoView, method: RebaseMethod, params: dict[str, Any], old_id: ObjectId, new_id: ObjectId,
            keys: list[str], probe: str | None) -> Transport:
    """The method's transport from one base to the other (measuring on the probe if it needs to)."""
    old, new = repo.store.read_tree(old_id), repo.store.read_tree(new_id)
    names = (repo.base_name(old_id) or "old", repo.base_name(new_id) or "new")
    _check_shapes(method, old, new, keys, names)
    ctx = RebaseContext(_Tensors(repo, old), _Tensors(repo, new), old.config, new.config, keys, *names)
    needs = "nothing" if params.get("data") == "weights" else method.needs  # theseus's data-free variant
    if needs != "nothing":
        if probe is None:
            what = "inputs and labels" if needs == "labels" else "inputs (labels unused)"
            raise BadInput(f"rebase method {method.name!r} needs a probe set", f"pass --probe FILE (safetensors with {what})")
        data = load_probe(probe, labels=needs == "labels")
        if needs == "labels":
            model = load_base_model(repo, new)
            to_model = names_of(new)
            ctx.grad_signs = majority_descent_signs(model, data, {k: to_model.get(k, k) for k in keys}, params["samples"])
        else:
            matrices = [k for k in keys if k.endswith(".weight") and len(old.tensors[k].shape) == 2]
            seen = []
            for tree in (old, new):
                to_model = names_of(tree)
                modules = {k: to_model.get(k, k).rpartition(".")[0] for k in matrices}
                seen.append(linear_activations(load_base_model(repo, tree), data, modules, params["samples"]))
            ctx.activations = {k: (seen[0][k][0], seen[1][k][0], seen[0][k][1], seen[1][k][1]) for k in matrices}
    return method(ctx, **params)


def transport_tree(repo: RepoView, tree: Tree, old: Tree, new: Tree, transport: Transport, alpha: float) -> Tree:
    """``tree``'s update moved by ``transport`` and scaled by ``alpha``, on the new base: a LoRA
    when every module stays low-rank, a task vector otherwise (or when it was one)."""
    load = lambda key: to_torch(repo.store.read_tensor(tree.tensors[key].id))  # noqa: E731
    base = lambda t, key: to_torch(repo.store.read_tensor(t.tensors[key].id)).float()  # noqa: E731
    edits = plan_edits(old, tree)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
    if tree.kind == "lora":
        for base_key, edit in edits.items():
            if edit.kind == "lora":
                assert edit.module is not None
                pairs[base_key] = transport.factors(base_key, load(edit.module.a_key), load(edit.module.b_key))
    low_rank = tree.kind == "lora" and all(p is not None for p in pairs.values())
    entries: dict[str, TensorEntry] = {}

    def fits(base_key: str, shape: tuple[int, ...]) -> None:
        want = tuple(new.tensors[base_key].shape)
        if tuple(shape) != want and not (len(want) == 2 and tuple(shape) == want[::-1] and tree.config.get("fan_in_fan_out")):
            raise IncompatibleAdapters(f"the moved update of {base_key!r} is {list(shape)} but the new base's tensor is {list(want)}",
                                       "this method cannot change that tensor's width; theseus moves linear layers only")

    for base_key, edit in edits.items():
        if edit.kind == "lora" and low_rank:
            assert edit.module is not None
            a, b = pairs[base_key]  # type: ignore[misc]
            fits(base_key, (b.shape[0], a.shape[1]) if not edit.module.embedding else (a.shape[1], b.shape[0]))
            like = load(edit.module.b_key).dtype
            entries[edit.module.a_key] = put_tensor(repo, a.to(like).contiguous())
            entries[edit.module.b_key] = put_tensor(repo, (alpha * b.float()).to(like).contiguous())
            continue
        if edit.kind == "lora":
            assert edit.module is not None
            b = load(edit.module.b_key)
            delta, like, key = lora_delta(tree.config, edit.module, load(edit.module.a_key), b), b.dtype, base_key
        elif edit.kind == "replace":  # a whole saved module: its update is whole − old base
            whole = load(edit.key)
            delta, like, key = whole.float() - base(old, base_key), whole.dtype, base_key
        else:
            delta = load(edit.key)
            like, key = delta.dtype, edit.key
        moved = alpha * transport.dense(base_key, delta.float())
        fits(base_key, tuple(moved.shape))
        if edit.kind == "replace" and low_rank:  # stays a whole module of the LoRA adapter
            entries[edit.key] = put_tensor(repo, (base(new, base_key) + moved).to(like).contiguous())
        else:
            entries[key] = put_tensor(repo, moved.to(like).contiguous())
    return Tree("lora", dict(tree.config), entries) if low_rank else Tree("task_vector", {}, entries)


def naming(tree: Tree, name: str, revision: str | None) -> Tree:
    """A LoRA adapter whose config names the base it is on (``base_model_name_or_path``, ``revision``),
    as serving systems check (vLLM's LoRA resolvers); other trees as they are."""
    if tree.kind != "lora":
        return tree
    return replace(tree, config={**tree.config, "base_model_name_or_path": name, "revision": revision})


def _best_alpha(repo: RepoView, new_id: ObjectId, unit: Tree, probe: str, metric: str) -> float:
    """The scale of the moved update with the best ``metric`` on the probe (``eval.best_scale``)."""
    data, score = load_probe(probe), load_metric(metric)
    scaled = ScaledAdapter(repo, repo.store.read_tree(new_id), unit)
    return best_scale(lambda a: score(scaled.set_scale(a), data))[0]


def select_branches(repo: RepoView, onto: str, branch: str | None, all_branches: bool) -> list[str]:
    """What ``rebase`` moves: ``branch`` (default: the current one), or with ``all_branches`` every
    branch whose head is on a base other than ``onto``."""
    if not all_branches:
        return [target_branch(repo, branch, "name the BRANCH to rebase")]
    if branch is not None:
        raise BadInput("give a branch or --all, not both")
    new_tree = named_base(repo, onto)
    branches = [b for b, oid in sorted(repo.branches().items())
                if (c := repo.store.read_commit(oid)).base is not None and c.base != new_tree]
    if not branches:
        raise BadInput(f"no branch has a head on a base other than {onto!r}", "nothing to rebase")
    return branches


@dataclass(frozen=True)
class _Rebase:
    """What every branch's rewrite shares (sent once to an executor's tasks)."""

    method: str
    params: dict[str, Any]
    alpha: float | str
    probe: str | None
    metric: str
    onto: str
    new_id: ObjectId
    transports: dict[ObjectId, Transport]
    author: str


def rebase(repo: RepoView, onto: str, branches: list[str], method_name: str, params: Mapping[str, Any] | None = None, *,
           alpha: float | str = 1.0, probe: str | None = None, metric: str = "accuracy", tip_only: bool = False, author: str,
           progress: ProgressFactory = no_progress, executor: Executor | None = None) -> list[RebaseResult]:
    """Rebase ``branches`` onto base ``onto``; see the module docstring. Every branch is rewritten
    first (one task per branch on ``executor``, the prepared transports sent once), then the branches
    move, each by compare-and-swap: a rebase that fails moves none."""
    method = get_rebase(method_name)
    full = method.params(params)
    if alpha == "auto" and probe is None:
        raise BadInput("--alpha auto picks the scale on a probe set", "pass --probe FILE")
    alpha = scale_value(alpha)
    new_id = named_base(repo, onto)
    jobs = _jobs(repo, branches, new_id, tip_only)
    transports: dict[ObjectId, Transport] = {}
    for old_id in dict.fromkeys(j.old_base for j in jobs):
        old = repo.store.read_tree(old_id)
        trees = [repo.store.read_tree(repo.store.read_commit(c).tree) for j in jobs if j.old_base == old_id for c in j.commits]
        transports[old_id] = prepare(repo, method, full, old_id, new_id, _keys(old, trees), probe)
    ctx = _Rebase(method.name, full, alpha, probe, metric, onto, new_id, transports, author)
    if executor is not None and executor.name != "local":
        advance = progress(f"rebasing onto {onto} with {method.name} on {executor.name}", len(jobs), "branches")
        results = executor.map(_rebase_task, jobs, shared=(repo.opener(), ctx))
        advance(len(jobs))
    else:
        advance = progress(f"rebasing onto {onto} with {method.name}", sum(len(j.commits) for j in jobs), "commits")
        done: dict[tuple[ObjectId, tuple[ObjectId, ...]], tuple[ObjectId, float]] = {}
        results = [_rewrite(repo, job, ctx, done, advance) for job in jobs]
    repo.store.sync()
    for job, result in zip(jobs, results):
        repo.refs.set_if_equals(HEADS + job.branch, job.head, result.new_head, f"rebase --onto {onto} ({method.name})", author)
    if results:
        first = results[0]
        repo.refs.set_detached("ORIG_HEAD", first.old_head, f"rebase {first.branch}", author)
    return results


def _rebase_task(shared: tuple[Any, _Rebase], job: _Job) -> RebaseResult:
    """One branch rewritten in a worker (its commits written; the driver moves the branch)."""
    opener, ctx = shared
    repo = opener()
    result = _rewrite(repo, job, ctx, {}, lambda n: None)
    repo.store.sync()
    return result


def _rewrite(repo: RepoView, job: _Job, ctx: _Rebase, done: dict[tuple[ObjectId, tuple[ObjectId, ...]], tuple[ObjectId, float]],
             advance: Any) -> RebaseResult:
    """New commits for ``job``'s commits on the new base, oldest first (``done``: commits shared with a
    branch rewritten before in this run, reused)."""
    old, new = repo.store.read_tree(job.old_base), repo.store.read_tree(ctx.new_id)
    parent: list[ObjectId] | None = None
    rewritten, alphas = [], {}
    for oid in job.commits:
        commit = repo.store.read_commit(oid)
        parents = list(commit.parents) if parent is None else parent
        if (oid, tuple(parents)) not in done:
            tree = repo.store.read_tree(commit.tree)
            scale = ctx.alpha
            if scale == "auto":
                assert ctx.probe is not None
                unit = transport_tree(repo, tree, old, new, ctx.transports[job.old_base], 1.0)
                scale = _best_alpha(repo, ctx.new_id, unit, ctx.probe, ctx.metric)
            moved = repo.store.write_tree(naming(transport_tree(repo, tree, old, new, ctx.transports[job.old_base], float(scale)),
                                                 *base_reference(repo, ctx.new_id)))
            op = Op("rebase", ctx.method, {**ctx.params, "alpha": float(scale)}, [oid])
            note = f"\n\n(rebased from {oid[:12]} on {repo.base_name(job.old_base)} onto {ctx.onto} with {ctx.method})"
            new_oid = repo.store.write_commit(sign_if_asked(repo, Commit(moved, parents, ctx.new_id, ctx.author, time.time(),
                                                                         commit.message + note, op)))
            done[oid, tuple(parents)] = (new_oid, float(scale))
        new_oid, used = done[oid, tuple(parents)]
        rewritten.append((oid, new_oid))
        alphas[new_oid] = used
        parent = [new_oid]
        advance(1)
    return RebaseResult(job.branch, job.head, rewritten[-1][1], rewritten, alphas)
