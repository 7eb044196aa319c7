"""What a model card says of a commit: its kind, its base and inputs as the ecosystem names them (a
hub id where one was recorded), its op, and its last verify report."""
from __future__ import annotations

from ..formats.card import CardInfo, CardInput, model_card
from ..store import Commit, ObjectId
from ..store.view import RepoView
from .commit import base_reference
from .reports import last_report


def _hub_id(commit: Commit) -> str | None:
    hub = commit.op.params.get("hub")
    return hub if isinstance(hub, str) else None


def _input(repo: RepoView, oid: ObjectId) -> CardInput:
    commit = repo.store.read_commit(oid)
    branches = sorted(b for b, o in repo.branches().items() if o == oid)
    return CardInput(_hub_id(commit) or (branches[0] if branches else oid[:12]), oid)


def card_info(repo: RepoView, oid: ObjectId, name: str) -> CardInfo:
    """The card of commit ``oid``, titled ``name`` (the revision the user named)."""
    commit = repo.store.read_commit(oid)
    tree = repo.store.read_tree(commit.tree)
    inputs = [_input(repo, i) for i in commit.op.inputs if repo.store.contains(i)]
    base = base_reference(repo, commit.base)[0] if commit.base else None
    return CardInfo(name, tree.kind, oid, commit.message, commit.op.to_json(), base, inputs, last_report(repo, oid))


def card_text(repo: RepoView, oid: ObjectId, name: str) -> bytes:
    return model_card(card_info(repo, oid, name)).encode()
