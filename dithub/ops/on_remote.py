"""A merge run against a remote, which is then its store of record (``merge --remote NAME``): the
inputs are read from the remote's objects (by each task, on ``--executor ray``: no clone on the
workers), the merged objects, the tree and the commit are written there, the remote branch moves by
compare-and-swap only after every task succeeded, and the result is then fetched. A local
repository never holds a commit whose objects it lacks; a merge that fails moves no ref and leaves
only unreferenced objects on the remote."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, RefNotFound
from ..progress import ProgressFactory, no_progress
from ..remote.store import RemoteObjectStore, open_remote
from ..store import BaseObjectStore, BaseRefStore, Commit, ObjectId
from ..store import is_object_id
from ..store.refs import BASES, HEADS, TAGS, full_ref_problem
from ..store.view import RepoView
from .identity import default_author
from .sign import sign_if_asked
from .executor import Executor
from .merge.plan import plan_merge
from .merge.run import run_merge
from .sync import SyncResult, fetch, location, remotes


@dataclass
class RemoteView:
    """A remote as the operations see a repository: its objects and refs (no working directory)."""

    store: BaseObjectStore
    refs: BaseRefStore
    url: str
    name: str
    options: dict[str, Any]
    path: Path | None = None

    def resolve(self, rev: str) -> ObjectId:
        """A branch, tag or base of the remote, or a full commit id it holds."""
        for prefix in (HEADS, TAGS, BASES):
            if check_full_ref_ok(prefix + rev) and (oid := self.refs.resolve(prefix + rev)) is not None:
                return oid
        if is_object_id(rev) and self.store.contains(rev):
            return rev
        raise RefNotFound(f"remote {self.name} has no branch, tag or base {rev!r}", f"list them: dithub fetch {self.name}; dithub branch -a")

    def current_branch(self) -> str | None:
        return None

    def branches(self) -> dict[str, ObjectId]:
        return {n[len(HEADS):]: o for n, o in self.refs.as_dict(HEADS).items()}

    def bases(self) -> dict[str, ObjectId]:
        return {n[len("refs/bases/"):]: o for n, o in self.refs.as_dict("refs/bases/").items()}

    def base_name(self, base_tree_id: ObjectId | None) -> str | None:
        return base_tree_id[:12] if base_tree_id else None

    def describe(self, oid: ObjectId) -> str:
        return oid[:12]

    def opener(self) -> Callable[[], Any]:
        return functools.partial(_task_view, self.url, self.name, self.options)


def check_full_ref_ok(name: str) -> bool:
    """Whether ``name`` is a ref a remote may hold (a name formed from user input is checked first)."""
    return full_ref_problem(name, (HEADS, TAGS, BASES)) is None


def _task_view(url: str, name: str, options: dict[str, Any]) -> Any:
    """What a task opens: the remote's objects (the tasks of a merge read and write objects only)."""
    store = open_remote(url, name, options)
    return _Objects(store)


@dataclass
class _Objects:
    store: RemoteObjectStore
    path: Path | None = None


def merge_on_remote(repo: RepoView, remote: str, revs: list[str], method: str, params: Mapping[str, Any] | None, *,
                    into: str, message: str | None = None, author: str | None = None, executor: Executor | None = None,
                    progress: ProgressFactory = no_progress) -> tuple[ObjectId, SyncResult]:
    """Merge the remote's ``revs`` (its branch names or commit ids) into its branch ``into``; see the
    module docstring. Returns the merge commit and what the fetch brought."""
    loc = location(repo, remote)
    config = remotes(repo)[remote]
    view = RemoteView(RemoteObjectStore(loc), loc.ref_store, loc.url, remote, dict(config.get("options") or {}))
    if not into:
        raise BadInput("a merge on a remote needs --into BRANCH (the remote's branch to move)")
    plan = plan_merge(view, revs, method, params)  # a remote is enough of a repository to plan on
    old = view.refs.resolve(HEADS + into)
    tree = run_merge(view, plan, progress, "cpu", executor=executor)
    parents = ([old] if old and old not in plan.inputs else []) + plan.inputs
    who = author or default_author()
    commit = view.store.write_commit(sign_if_asked(repo, Commit(tree, parents, plan.base, who, time.time(),
                                                                message or f"merge {', '.join(revs)} with {method} (on {remote})",
                                                                plan.op)))  # -S signs here too
    view.refs.set_if_equals(HEADS + into, old, commit, f"merge on {remote}: {method}", who)
    return commit, fetch(repo, remote, [into], progress=progress)
