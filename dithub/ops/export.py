"""Writing stored trees out: an adapter (or checkpoint) in its own format, or a base's full weights
with an adapter folded in. Streamed and verified chunk by chunk; the output file appears whole or not at all."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import BadInput
from ..formats import import_model_dir
from ..formats import write_tree as write_tree_file
from ..formats.card import model_card
from ..formats.exporters import DEFAULT_SHARD, WEIGHTS_INDEX, Loader, byte_size
from ..formats.importers import MODEL_CARD
from ..progress import ProgressFactory, no_progress
from ..store import Commit, ObjectId, TensorEntry, Tree
from ..store.view import RepoView
from .card import card_info, card_text
from .commit import named_model

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


@dataclass(frozen=True)
class _Into:
    """The base an adapter is folded into: its tree, tensors, side files and the name a card gives it."""

    tree: Tree
    load: Loader
    files: dict[str, bytes]
    name: str


def _side_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """A base's files that a merged model directory also needs (config, tokenizer, generation config):
    not its weights' index nor its model card (the merged model gets its own)."""
    return {name: data for name, data in files.items() if name not in (WEIGHTS_INDEX, MODEL_CARD)}


def _stored(repo: RepoView, tree_id: ObjectId, name: str) -> _Into:
    tree = repo.store.read_tree(tree_id)
    if tree.kind != "full":
        raise BadInput(f"{name} is a {tree.kind} commit, not a full checkpoint", "fold the adapter into a base (see `dithub base list`)")
    blobs = {n: repo.store.read_blob(f.blob) for n, f in tree.files.items() if f.blob is not None}
    return _Into(tree, lambda key: repo.store.read_tensor(tree.tensors[key].id), _side_files(blobs), name)


def _into(repo: RepoView, rev: str, commit: Commit, text: str | None) -> _Into:
    """The base named by ``text`` (an existing path, then a dithub revision, then ``hf://org/name``),
    or, without one, the base the commit records."""
    if text is None:
        if commit.base is None:
            raise BadInput(f"{rev} records no base checkpoint", "pass --merge-into BASE (see `dithub base list`)")
        return _stored(repo, commit.base, repo.base_name(commit.base) or commit.base[:12])
    named = named_model(repo, text, "--merge-into", "give a model directory, a name from `dithub base list`, or hf://org/name")
    if named.commit is not None:
        return _stored(repo, repo.store.read_commit(named.commit).tree, text)
    assert named.path is not None
    path, hub = named.path, named.hub
    staged = import_model_dir(path)
    tree = Tree("full", staged.config, {n: TensorEntry("", t.dtype, t.shape) for n, t in staged.tensors.items()})
    kept = {n: data for n, data in staged.kept.items() if isinstance(data, bytes)}
    return _Into(tree, staged.tensors.__getitem__, _side_files(kept), hub.repo_id if hub else str(path))


def export_merged(repo: RepoView, rev: str, base: str | None, out: Path, progress: ProgressFactory = no_progress, *,
                  max_shard_size: int | str = DEFAULT_SHARD) -> Path:
    """Full weights of ``rev``'s base (or of base ``base``) with the adapter folded in, sharded as
    ``save_pretrained`` shards, with the base's tokenizer and generation config and a model card."""
    oid = repo.resolve(rev)
    commit = repo.store.read_commit(oid)
    adapter = repo.store.read_tree(commit.tree)
    if adapter.kind == "full":
        raise BadInput(f"{rev} is a full checkpoint, not an adapter", "export it without --merge-into")
    shard_bytes = byte_size(max_shard_size)
    into = _into(repo, rev, commit, base)
    info = replace(card_info(repo, oid, f"{rev} merged into {into.name}"), kind="full", base=into.name)
    from ..formats import write_merged_model  # torch: only for this export
    return write_merged_model(out, into.tree, into.load, adapter, lambda key: repo.store.read_tensor(adapter.tensors[key].id),
                              progress(f"writing {out}", into.tree.nbytes), max_shard_bytes=shard_bytes,
                              extra={**into.files, MODEL_CARD: model_card(info).encode()})
