"""The revert executor: undo a commit, or remove one input from a merge, as a new commit.

``revert COMMIT`` writes the commit's parent's adapter (the commit is the head) or the head with
the commit's change taken out (head − commit + parent, in full space). ``revert INPUT --from MERGE``
uses the merge's ``op`` record: ``exact`` replays the merge without INPUT (through merges of merges
and OPCM chains, replaying each without it), bit-identical to merging the remaining inputs
directly; ``negation`` and ``ntk`` subtract α·τ_INPUT from the merged update. History is never
rewritten: the new commit's parent is the branch's head and its ``op`` = revert (method, the merge,
the removed input, α).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..algorithms.merge import REGISTRY as MERGES
from ..algorithms.merge import get_method
from ..algorithms.merge.registry import recorded_params
from ..errors import BadInput, IncompatibleAdapters, ObjectNotFound
from ..eval import ScaledAdapter, best_scale, load_metric, load_probe
from ..formats.torch_io import TORCH_DTYPES
from .merge.run import replay_device, run_merge
from .delta_specs import delta_specs
from .deltas import delta_loader, put_tensor
from .executor import Executor
from .merge.plan import plan_merge, recorded_probes
from .merge.sequential import opcm_step, recorded_project
from ..algorithms.revert import EXACT, METHODS, is_linearized, negate, remove_from_mean
from ..algorithms.revert import REGISTRY as REVERTS
from ..store import Commit, ObjectId, Op, Tree
from ..store.view import RepoView
from ..store.refs import HEADS
from .branches import target_branch
from .commit import commit_tree
from .identity import default_author

LINEAR = ("task_arithmetic", "concat")
"""Merge methods whose result is a (scaled) sum of the inputs: negation removes an input exactly."""
DEFAULT_MARGIN = 0.02


def _deltas(repo: RepoView, commit: Commit) -> tuple[dict[str, tuple[str, tuple[int, ...]]], Callable[[str], torch.Tensor]]:
    tree = repo.store.read_tree(commit.tree)
    base = repo.store.read_tree(commit.base) if commit.base else None
    return delta_specs(tree, base), delta_loader(repo, tree, commit.base)


def _write(repo: RepoView, tensors: dict[str, tuple[str, torch.Tensor]]) -> ObjectId:
    entries = {n: put_tensor(repo, t.to(TORCH_DTYPES[d]).contiguous()) for n, (d, t) in tensors.items()}
    return repo.store.write_tree(Tree("task_vector", {}, entries))


# -- revert COMMIT ----------------------------------------------------------------


def undo_tree(repo: RepoView, oid: ObjectId, head: ObjectId) -> ObjectId:
    """The tree that undoes commit ``oid`` on top of ``head``."""
    commit = repo.store.read_commit(oid)
    if not commit.parents:
        raise BadInput(f"commit {oid[:12]} has no parent to return to", "a root commit cannot be reverted; delete the branch instead")
    parent = repo.store.read_commit(commit.parents[0])
    if head == oid:
        return parent.tree
    top = repo.store.read_commit(head)
    if len({c.base for c in (commit, parent, top)}) != 1:
        raise IncompatibleAdapters(f"commit {oid[:12]}, its parent and the head are on different bases", "rebase them onto one base first")
    parts = [_deltas(repo, c) for c in (top, commit, parent)]
    names = {**parts[2][0], **parts[1][0], **parts[0][0]}  # a name's spec from the head where it has one
    out = {}
    for name, (dtype, shape) in names.items():
        total = torch.zeros(shape, dtype=torch.float32)
        for (specs, load), sign in zip(parts, (1.0, -1.0, 1.0)):
            if name in specs:
                total += sign * load(name).float().reshape(shape)
        out[name] = (dtype, total)
    return _write(repo, out)


# -- revert INPUT --from MERGE ------------------------------------------------------


def _sequential(method: str | None) -> bool:
    """Whether a recorded merge ran a sequential method (one input per commit: OPCM)."""
    return method in MERGES and MERGES[method or ""].sequential


def opcm_chain(repo: RepoView, oid: ObjectId) -> list[ObjectId]:
    """The OPCM commits that built ``oid``'s running merge, oldest first."""
    chain = [oid]
    commit = repo.store.read_commit(oid)
    while len(commit.parents) == 2:  # (previous running merge, input); the first has the input only
        previous = repo.store.read_commit(commit.parents[0])
        if not _sequential(previous.op.method):
            break
        chain.append(commit.parents[0])
        commit = previous
    return chain[::-1]


def merge_inputs(repo: RepoView, oid: ObjectId) -> list[ObjectId]:
    """The inputs a merge commit combined (all of an OPCM chain's, in order); [] if not a merge."""
    commit = repo.store.read_commit(oid)
    if commit.op.name != "merge":
        return []
    if _sequential(commit.op.method):
        return [repo.store.read_commit(c).op.inputs[0] for c in opcm_chain(repo, oid)]
    return list(commit.op.inputs)


def contains(repo: RepoView, oid: ObjectId, removed: ObjectId) -> bool:
    """Whether ``removed`` went into merge ``oid``, directly or through merges of merges."""
    return any(i == removed or contains(repo, i, removed) for i in merge_inputs(repo, oid))


def _check_present(repo: RepoView, oid: ObjectId) -> None:
    missing = [i for i in merge_inputs(repo, oid) if not repo.store.contains(i)]
    if missing:
        raise ObjectNotFound(f"the inputs of merge {oid[:12]} are not in this repository ({', '.join(m[:12] for m in missing)}; "
                             "a shallow fetch?)", "fetch them, or use --method negation, which needs only the merge and the input")
    for i in merge_inputs(repo, oid):
        _check_present(repo, i)


def replay_without(repo: RepoView, oid: ObjectId, removed: ObjectId, author: str, executor: Executor | None = None) -> ObjectId:
    """The tree of merge ``oid`` recomputed from its recorded op without ``removed`` (its replays as
    tasks on ``executor``)."""
    commit = repo.store.read_commit(oid)

    def kept(i: ObjectId) -> ObjectId:
        """An input as it is, or (a merge that contains ``removed``) its replay, as a new unreferenced commit."""
        if not contains(repo, i, removed):
            return i
        sub = repo.store.read_commit(i)
        tree = replay_without(repo, i, removed, author, executor)
        return repo.store.write_commit(Commit(tree, [], sub.base, author, time.time(), f"{sub.message} (replayed without {removed[:12]})",
                                              Op("merge", sub.op.method, _without(sub.op.params, sub.op.inputs, removed),
                                                 [x for x in sub.op.inputs if x != removed], _data_without(sub.op, removed))))

    inputs = [kept(i) for i in merge_inputs(repo, oid) if i != removed]
    if not inputs:
        raise BadInput(f"removing {removed[:12]} leaves merge {oid[:12]} with no input", "revert the merge commit itself instead")
    if _sequential(commit.op.method):
        state: tuple[Tree, ObjectId | None] | None = None
        tree_id = ""
        for i in inputs:
            tree_id = opcm_step(repo, state, i, float(commit.op.params["alpha"]), project=recorded_project(commit.op.params))
            state = (repo.store.read_tree(tree_id), repo.store.read_commit(i).base)
        return tree_id
    # one input may remain: every method is defined for it (a user-facing merge asks for two)
    params = recorded_params(commit.op.method or "", _without(commit.op.params, commit.op.inputs, removed))
    return run_merge(repo, plan_merge(repo, inputs, commit.op.method or "", params, min_inputs=1,
                                      probes=_probes_without(commit.op, removed)),
                     device=replay_device(commit.op.params), executor=executor)


def _without(params: dict[str, Any], inputs: list[ObjectId], removed: ObjectId) -> dict[str, Any]:
    """A merge op's parameters for its inputs without ``removed``: its weight, if any, dropped."""
    if "weights" not in params:
        return dict(params)
    return {**params, "weights": [w for i, w in zip(inputs, params["weights"]) if i != removed]}


def _probes_without(op: Op, removed: ObjectId) -> list[ObjectId]:
    """A merge op's probes for its inputs without ``removed``: its own dropped where each input has one."""
    probes = recorded_probes(op)
    if len(probes) != len(op.inputs) or len(op.inputs) == 1:
        return probes
    return [d for i, d in zip(op.inputs, probes) if i != removed]


def _data_without(op: Op, removed: ObjectId) -> list[ObjectId]:
    """A merge op's data without ``removed``'s probe (its defence vector kept)."""
    return _probes_without(op, removed) + [d for d in op.data if d not in recorded_probes(op)]


def _scale_of(commit: Commit) -> float | None:
    name = get_method(commit.op.method or "").scale_for(commit.op.params)
    return float(commit.op.params[name]) if name and name in commit.op.params else None


def _mean_scale(method: Any, params: dict[str, Any], vectors: str | None) -> float:
    """The factor on the mean of the tensors a merge averaged (α of a matrices-only method, else 1)."""
    if method.matrices_only and vectors == "method" and method.scale_param:
        return float(params[method.scale_param])
    return 1.0


def negation_tree(repo: RepoView, merge: Commit, removed: Commit, alpha: float,
                  subtract: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = negate) -> ObjectId:
    """The merge's update minus α times the removed input's, in full space (tensors the merge
    averaged lose the input from their mean)."""
    method = get_method(merge.op.method or "")
    vectors = recorded_params(merge.op.method or "", merge.op.params).get("vectors")
    n = len(merge.op.inputs)
    m_specs, m_load = _deltas(repo, merge)
    r_specs, r_load = _deltas(repo, removed)
    stray = sorted(set(r_specs) - set(m_specs))
    if stray:
        raise IncompatibleAdapters(f"the removed input changes {stray[0]!r}, which the merge does not hold")
    out = {}
    for name, (dtype, shape) in m_specs.items():
        merged = m_load(name).reshape(shape)
        if name not in r_specs:
            out[name] = (dtype, merged.float())
        elif not method.sequential and not method.applies_to(shape, vectors, name) and n > 1:
            scale = _mean_scale(method, merge.op.params, vectors)  # α·mean for matrices-only methods
            out[name] = (dtype, remove_from_mean(merged, scale * r_load(name).reshape(shape).float(), n))
        else:
            out[name] = (dtype, subtract(merged, r_load(name).reshape(shape), alpha))
    return _write(repo, out)


def auto_alpha(repo: RepoView, merge: Commit, removed: Commit, probe_spec: str, margin: float,
               metric: str = "accuracy") -> tuple[float, dict[float, float]]:
    """The largest α whose retain score (``metric`` on the probe) stays within ``margin`` of the
    merge's (``eval.best_scale`` with a floor); the scores, the merge's at α = 0."""
    probe, score = load_probe(probe_spec), load_metric(metric)
    base = repo.store.read_tree(merge.base) if merge.base else None
    if base is None:
        raise BadInput("--alpha auto evaluates on the merge's base checkpoint, and the merge records none")
    merged = ScaledAdapter(repo, base, repo.store.read_tree(merge.tree))
    gone = ScaledAdapter(repo, base, repo.store.read_tree(removed.tree))
    reference = score(merged.set_scale(1.0), probe)
    best, scores = best_scale(lambda a: score(merged.set_scale(1.0, [(gone, -a)]), probe), floor=reference - margin)
    return best, {0.0: reference, **scores}


def revert_input(repo: RepoView, removed: ObjectId, merge_id: ObjectId, method: str, *, alpha: float | str | None,
                 probe: str | None, force: bool, margin: float, author: str, names: tuple[str, str],
                 metric: str = "accuracy", executor: Executor | None = None) -> tuple[ObjectId, dict[str, Any]]:
    """The tree that removes ``removed`` from merge ``merge_id``, and the op parameters to record."""
    merge = repo.store.read_commit(merge_id)
    if merge.op.name != "merge":
        raise BadInput(f"{names[1]} is not a merge commit", "give the merge with --from; without --from, revert undoes a commit")
    if not contains(repo, merge_id, removed):
        listed = ", ".join(repo.describe(i) for i in merge_inputs(repo, merge_id))
        raise BadInput(f"{names[0]} was not part of merge {names[1]}", f"its inputs were: {listed}")
    if method != EXACT and method not in REVERTS:
        raise BadInput(f"unknown revert method {method!r}", f"valid methods: {', '.join(METHODS)}")
    params: dict[str, Any] = {"from": merge_id, "removed": removed}
    if method == EXACT:
        if alpha is not None:
            raise BadInput("--alpha is for negation and ntk", "exact replays the merge as it was recorded")
        _check_present(repo, merge_id)
        return replay_without(repo, merge_id, removed, author, executor), params
    algo = REVERTS[method]
    if removed not in merge_inputs(repo, merge_id):
        raise BadInput(f"{names[0]} went into {names[1]} through another merge", "use --method exact, which replays the chain")
    input_commit = repo.store.read_commit(removed)
    if algo.linearized_only and not is_linearized(repo.store.read_tree(input_commit.tree).config):
        raise BadInput(f"{names[0]} was not trained linearized, so removing it by subtraction is not first-order exact",
                       "train with dithub.train.linearized (save_linearized marks the file), or use --method exact/negation")
    if merge.op.method not in LINEAR and not force:
        raise BadInput(f"{names[1]} was merged with {merge.op.method}, which is not a sum of its inputs: subtracting one only "
                       "approximates removing it", "use --method exact, or pass --force to subtract anyway")
    if alpha == "auto":
        if probe is None:
            raise BadInput("--alpha auto keeps the accuracy of a retain probe set", "pass --probe FILE")
        alpha, _scores = auto_alpha(repo, merge, input_commit, probe, margin, metric)
        params["margin"] = margin
    elif alpha is None:
        alpha = _scale_of(merge)
        if alpha is None:
            raise BadInput(f"{names[1]} records no final scale to subtract with", "pass --alpha A")
    params["alpha"] = float(alpha)
    return negation_tree(repo, merge, input_commit, float(alpha), algo.fn), params


def revert(repo: RepoView, rev: str, *, from_merge: str | None = None, method: str = "exact", alpha: float | str | None = None,
           probe: str | None = None, metric: str = "accuracy", force: bool = False, margin: float | None = None,
           branch: str | None = None, message: str | None = None, author: str | None = None, executor: Executor | None = None) -> ObjectId:
    """Undo commit ``rev``, or (``from_merge``) remove input ``rev`` from that merge, as a new commit
    on ``branch`` (default: the current one); an exact revert's replays run on ``executor``."""
    branch = target_branch(repo, branch, "pass --into BRANCH")
    head = repo.refs.resolve(HEADS + branch)
    oid = repo.resolve(rev)
    who = author or default_author()
    if from_merge is None:
        if method != "exact" or alpha is not None or probe is not None or force:
            raise BadInput("--method, --alpha, --probe and --force apply to removing an input", "pass --from MERGE")
        if head is None:
            raise BadInput(f"branch {branch!r} has no commits to revert on")
        tree = undo_tree(repo, oid, head)
        reverted = repo.store.read_commit(oid)
        base = repo.store.read_commit(reverted.parents[0] if head == oid else head).base
        op = Op("revert", None, {"reverted": oid}, [oid])
        text = message or f"Revert {repo.describe(oid)}: {reverted.message.splitlines()[0]}\n\nThis reverts commit {oid}."
    else:
        merge_id = repo.resolve(from_merge)
        tree, params = revert_input(repo, oid, merge_id, method, alpha=alpha, probe=probe, force=force,
                                    margin=DEFAULT_MARGIN if margin is None else margin, author=who, names=(rev, from_merge),
                                    metric=metric, executor=executor)
        base = repo.store.read_commit(merge_id).base
        op = Op("revert", method, params, [merge_id, oid])
        text = message or f"revert: remove {rev} from {from_merge} ({method})"
    return commit_tree(repo, tree, text, branch=branch, parents=[head] if head else [], base=base, op=op,
                       author=who, expected=head)
