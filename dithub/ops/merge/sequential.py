"""Sequential merges (OPCM): one input joins the running merge on a branch per commit.

The running state (λ, the norms seen, α) is stored in the merge tree's config under ``opcm``; the
commit's parents are the previous running merge and the new input, its ``op`` names the input.
The running merge is held in memory while the new one is computed (one model, never N).
"""
from __future__ import annotations

import math
from typing import Any

from ...errors import BadInput, IncompatibleAdapters
from ...eval.model import linear_weights
from ...formats import base_key_lookup
from ...formats.torch_io import TORCH_DTYPES, to_torch
from ...algorithms.merge import get_method
from ..delta_specs import delta_specs
from ..deltas import delta_loader, put_tensor
from ...progress import ProgressFactory, no_progress
from ...store import ObjectId, Op, Tree
from ...store.view import RepoView
from ...store.refs import HEADS
from ..commit import commit_tree


def recorded_project(params: dict[str, Any]) -> str:
    """What an OPCM op projected (``project``; merges recorded before it: every 2-D tensor)."""
    return str(get_method("opcm").recorded(params)["project"])


def opcm_merge(repo: RepoView, rev: str, branch: str, params: dict[str, Any] | None = None, *,
               message: str | None = None, author: str | None = None,
               progress: ProgressFactory = no_progress) -> ObjectId:
    """Add ``rev`` to the OPCM merge running on ``branch`` (starting it if the branch is new)."""
    full = get_method("opcm").params(params)
    previous, new_id = repo.refs.resolve(HEADS + branch), repo.resolve(rev)
    prev = None
    if previous is not None:
        prev_commit = repo.store.read_commit(previous)
        prev = (repo.store.read_tree(prev_commit.tree), prev_commit.base)
        if "opcm" not in prev[0].config:
            raise BadInput(f"branch {branch!r} does not hold an OPCM merge", "start one on a new branch: --into NEW")
    tree = opcm_step(repo, prev, new_id, full["alpha"], progress, what=rev, where=branch, project=full["project"])
    return commit_tree(repo, tree, message or f"opcm: add {rev}", branch=branch, parents=([previous] if previous else []) + [new_id],
                       base=repo.store.read_commit(new_id).base, op=Op("merge", "opcm", full, [new_id]), author=author,
                       expected=previous)


def opcm_step(repo: RepoView, previous: tuple[Tree, ObjectId | None] | None, new_id: ObjectId, alpha: float,
              progress: ProgressFactory = no_progress, *, what: str = "", where: str = "",
              project: str = "modules") -> ObjectId:
    """The tree of the running merge ``previous`` (its tree and base; None to start) with commit
    ``new_id`` added (``project``: which tensors are projected); stored, no commit written."""
    what, where = what or new_id[:12], where or "the running merge"
    new_commit = repo.store.read_commit(new_id)
    new_tree = repo.store.read_tree(new_commit.tree)
    specs = delta_specs(new_tree, repo.store.read_tree(new_commit.base) if new_commit.base else None)
    load_new = delta_loader(repo, new_tree, new_commit.base)
    state: dict[str, Any]
    if previous is None:
        tensors = {n: load_new(n).double() for n in specs}
        state = {"lambda": 1.0, "norms": [_norm(tensors.values())], "alpha": alpha}
    else:
        prev_tree, prev_base = previous
        if prev_base != new_commit.base:
            raise IncompatibleAdapters(f"{what} has another base checkpoint than {where}")
        if set(prev_tree.tensors) != set(specs) or any(tuple(prev_tree.tensors[n].shape) != s for n, (_d, s) in specs.items()):
            raise IncompatibleAdapters(f"{what} does not adapt the same tensors (names, shapes) as {where}")
        state = dict(prev_tree.config["opcm"])
        advance = progress(f"opcm: adding {what}", len(specs), "tensors")
        linear = None  # without a recorded base: every 2-D tensor
        if project in ("modules", "linear") and new_commit.base is not None:
            base = repo.store.read_tree(new_commit.base)
            linear = linear_weights(base)
            if project == "modules":  # the input's names as the base's checkpoint keys (``linear``: as given)
                lookup = base_key_lookup(base)
                linear = {n for n in specs if lookup(n) in linear}
        accumulate = get_method("opcm").fn
        tensors, task_sq = {}, 0.0
        for name in specs:
            task = load_new(name).double()
            task_sq += float(task.pow(2).sum())
            prev = to_torch(repo.store.read_tensor(prev_tree.tensors[name].id)).double()
            tensors[name] = accumulate(prev, task, state["lambda"], None if linear is None else name in linear, alpha=alpha, project=project)
            advance(1)
        state["norms"] = [*state["norms"], math.sqrt(task_sq)]
        mean = sum(state["norms"]) / len(state["norms"])
        state["lambda"] = _norm(tensors.values()) / mean
        tensors = {n: t / state["lambda"] for n, t in tensors.items()}
        state["alpha"] = alpha
    entries = {n: put_tensor(repo, t.to(TORCH_DTYPES[specs[n][0]])) for n, t in tensors.items()}
    return repo.store.write_tree(Tree("task_vector", {"opcm": state}, entries))


def _norm(tensors: Any) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors))
