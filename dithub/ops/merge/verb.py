"""``dithub merge``: a merge commit on a branch (its parents: the branch's previous head, then the
inputs, never re-merged), its final scale optionally chosen on a probe; sequential OPCM adds one
input per commit. ``compose`` writes a merge to a file without a commit (DitHub's per-query
composition)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ...algorithms.merge import get_method
from ...errors import BadInput, IncompatibleAdapters
from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, Tree
from ...store.view import RepoView
from ...store.refs import HEADS
from ..branches import target_branch
from ..commit import commit_tree
from ..executor import Executor
from . import elementwise
from .plan import plan_merge


def merge(repo: RepoView, revs: list[str], method: str, params: Mapping[str, Any] | None = None, *, into: str | None = None,
          message: str | None = None, author: str | None = None, progress: ProgressFactory = no_progress,
          probe: str | None = None, metric: str = "accuracy", device: str = "auto", executor: Executor | None = None,
          probes: Sequence[str] = (), defense: Mapping[str, Any] | None = None) -> ObjectId:
    """Merge ``revs`` with ``method`` into a new commit on ``into`` (default: the current branch).
    With ``probe``, the method's final scale is chosen by ``sweep_alpha`` on that probe set (by
    ``metric``); the merge then runs once more at that scale, so the commit equals a replay of its
    ``op`` bit for bit. ``probes``: the data an activation method (RegMean, CoM) runs the model on,
    one file for every input or one per input, stored with the commit (``Op.data``). ``defense``:
    ``{"method": "ibvs", "vector": REV, parameters…}``, applied to the result (``ops.merge.defend``);
    REV's tree is recorded with the commit too."""
    branch = target_branch(repo, into, "pass --into BRANCH")
    if get_method(method).sequential:  # each input joins the running merge in its own commit
        from .sequential import opcm_merge  # torch: only for OPCM

        if params and "weights" in params:
            raise BadInput(f"{method} takes no per-input weights (its paper defines none)", "drop --weight")
        oid = ""
        for rev in revs:
            oid = opcm_merge(repo, rev, branch, dict(params or {}), message=message, author=author, progress=progress)
        return oid
    if defense is not None:
        if probe is not None:
            raise BadInput("--alpha auto scales the merge, and the defence would scale with it", "pick --alpha, or drop --defend")
        params = {**(params or {}), "defense": _defense(repo, defense)}
    if get_method(method).space == "activation":
        from ..probes import store_probe  # torch: reads the probe files

        plan_merge(repo, revs, method, params)  # refuse bad inputs before storing anything
        plan = plan_merge(repo, revs, method, params, probes=[store_probe(repo, p) for p in probes])
    else:
        if probes:
            raise BadInput(f"{method} reads no probe sets (RegMean and CoM do)", "drop --probe, or use it with --alpha auto")
        plan = plan_merge(repo, revs, method, params)
    note = ""
    if probe is not None:
        from .run import sweep_alpha  # torch: evaluates models

        best, scores = sweep_alpha(repo, plan, probe, metric)
        scale = get_method(method).scale_for(plan.params)
        assert scale is not None  # sweep_alpha refuses a method without one
        plan = replace(plan, params={**plan.params, scale: best})
        note = f"\n\n{scale} = {best} chosen on {probe} by {metric}: " + ", ".join(f"{a}: {s:.3f}" for a, s in scores.items())
    if defense is not None and plan.base != repo.store.read_commit(repo.resolve(str(defense["vector"]))).base:
        raise IncompatibleAdapters(f"the defence vector {defense['vector']} is not on the inputs' base checkpoint",
                                   "inject and commit it on the same base (--base NAME)")
    previous = repo.refs.resolve(HEADS + branch)
    report: dict[str, Any] = {}
    trees = [repo.store.read_tree(repo.store.read_commit(i).tree) for i in plan.inputs]
    if (executor is None or executor.name == "local") and elementwise.applies(plan, trees, device):
        tree = elementwise.run(repo, plan, trees, progress)  # no torch: the same bits (see elementwise)
    else:
        from .run import run_merge

        tree = run_merge(repo, plan, progress, device, report=report, executor=executor)
    parents = ([previous] if previous and previous not in plan.inputs else []) + plan.inputs
    text = (message or f"merge {', '.join(revs)} with {method}") + note
    op = replace(plan.op, params={**plan.op.params, **report})  # where it ran, and what a rank cap dropped
    return commit_tree(repo, tree, text, branch=branch, parents=parents, base=plan.base, op=op, author=author,
                       expected=previous)


def _defense(repo: RepoView, defense: Mapping[str, Any]) -> dict[str, Any]:
    """A defence spec with its vector's revision resolved to the tree it names."""
    rev = defense.get("vector")
    if not isinstance(rev, str) or not rev:
        raise BadInput("--defend needs the vector it subtracts", "pass --defense-vector REV (the injected backdoor vector)")
    return {**defense, "vector": repo.store.read_commit(repo.resolve(rev)).tree}


def compose(repo: RepoView, revs: list[str], method: str = "mean_ba", params: Mapping[str, Any] | None = None, *,
            progress: ProgressFactory = no_progress) -> Tree:
    """The merged tree of ``revs``, stored but unreferenced (``gc`` removes it later)."""
    from .run import run_merge

    return repo.store.read_tree(run_merge(repo, plan_merge(repo, revs, method, params), progress))
