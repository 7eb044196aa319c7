"""Writing stored trees out: an adapter (or checkpoint) in its own format, or a base's full weights
with an adapter folded in. Streamed and verified chunk by chunk; the output file appears whole or not at all."""
from __future__ import annotations

from pathlib import Path

from ..formats import write_tree as write_tree_file
from ..formats.importers import MODEL_CARD
from ..errors import BadInput
from ..progress import ProgressFactory, no_progress
from ..store import Tree
from ..store.view import RepoView
from .card import card_text
from .commit import named_base

COMMITTED = ("commit", "base")
"""Ops whose trees hold files as they were committed (any other op computed its tree)."""


def write_tree(repo: RepoView, tree: Tree, out: Path, progress: ProgressFactory = no_progress, *, generated: bool = True,
               card: bytes | None = None) -> Path:
    """Stream a stored tree to ``out`` in its own format (and ``card`` as its README.md)."""
    chunks = lambda name: repo.store.iter_tensor_bytes(tree.tensors[name].id)  # noqa: E731
    return write_tree_file(out, tree, chunks, progress(f"writing {out}", tree.nbytes), repo.store.read_blob,
                           generated=generated, extra={MODEL_CARD: card} if card is not None else None)


def export(repo: RepoView, rev: str, out: Path, progress: ProgressFactory = no_progress, *, card: bool = False) -> Path:
    """Write ``rev``'s tree out: its committed files verbatim, with a model card where none was
    committed (or, with ``card``, in place of the committed one)."""
    oid = repo.resolve(rev)
    commit = repo.store.read_commit(oid)
    tree = repo.store.read_tree(commit.tree)
    fresh = card or MODEL_CARD not in tree.files
    return write_tree(repo, tree, out, progress, generated=commit.op.name not in COMMITTED,
                      card=card_text(repo, oid, rev) if fresh else None)


def export_merged(repo: RepoView, rev: str, base: str | None, out: Path, progress: ProgressFactory = no_progress) -> Path:
    """Full weights of ``rev``'s base (or base ``base``) with the adapter folded in."""
    commit = repo.store.read_commit(repo.resolve(rev))
    base_oid = named_base(repo, base) if base else commit.base
    if base_oid is None:
        raise BadInput(f"{rev} records no base checkpoint", "pass --merge-into BASE (see `dithub base list`)")
    base_tree = repo.store.read_tree(base_oid)
    adapter = repo.store.read_tree(commit.tree)
    if adapter.kind == "full":
        raise BadInput(f"{rev} is a full checkpoint, not an adapter", "export it without --merge-into")
    from ..formats import write_merged_model  # torch: only for this export
    load = lambda tree: lambda name: repo.store.read_tensor(tree.tensors[name].id)  # noqa: E731
    return write_merged_model(out, base_tree, load(base_tree), adapter, load(adapter),
                                      progress(f"writing {out}", base_tree.nbytes))
