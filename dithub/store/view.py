"""``RepoView``: what the layers above the store see of a repository — its object store, its refs,
its directory, and names resolved to commits. ``dithub.Repo`` is one; the operations take any."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .ids import ObjectId
from .objectstore import BaseObjectStore
from .refs import BaseRefStore


class RepoView(Protocol):
    """A repository as the operations, checks and evaluations use it (never built by them)."""

    store: BaseObjectStore
    refs: BaseRefStore
    path: Path | None
    """The working directory (None for a repository in memory)."""

    def resolve(self, rev: str) -> ObjectId:
        """The commit id a revision names (branch, tag, base, id, ``~N``)."""
        ...

    def current_branch(self) -> str | None:
        """The branch HEAD is on, or None when detached."""
        ...

    def branches(self) -> dict[str, ObjectId]: ...

    def bases(self) -> dict[str, ObjectId]:
        """Named base checkpoints: name -> commit id."""
        ...

    def base_name(self, base_tree_id: ObjectId | None) -> str | None:
        """The name a base tree is registered under (else its short id)."""
        ...

    def describe(self, oid: ObjectId) -> str:
        """A commit's name for messages: the branches at it, else its short id."""
        ...
