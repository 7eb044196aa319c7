"""``RepoView``: what the layers above the store see of a repository — its object store, its refs,
its directory, and names resolved to commits. ``dithub.Repo`` is one; the operations take any."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Protocol

from .ids import ObjectId
from .objectstore import BaseObjectStore
from .refs import BaseRefStore


class RepoView(Protocol):
    """A repository as the operations, checks and evaluations use it (never built by them); the
    methods are ``dithub.Repo``'s."""

    store: BaseObjectStore
    refs: BaseRefStore
    path: Path | None
    """The working directory (None for a repository in memory)."""

    def resolve(self, rev: str) -> ObjectId: ...
    def current_branch(self) -> str | None: ...
    def branches(self) -> dict[str, ObjectId]: ...
    def bases(self) -> dict[str, ObjectId]: ...
    def base_name(self, base_tree_id: ObjectId | None) -> str | None: ...
    def describe(self, oid: ObjectId) -> str: ...
    def opener(self) -> Callable[[], RepoView]:
        """A picklable function that opens this repository again (in a worker process)."""
        ...
