"""Commits: import an adapter or a base checkpoint into the store, and write a commit that moves a
ref by compare-and-swap (every verb that writes history ends here)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..formats import Staged, check_fits, import_adapter, import_model_dir
from ..formats.hf_names import model_names
from ..formats.hub import SCHEME, HubSource
from ..formats.hub import source as hub_source
from ..errors import BadInput, RefNotFound
from ..progress import ProgressFactory, no_progress
from ..store import Commit, ObjectId, Op, TensorEntry, Tree, check_ref_name
from ..store.ids import Buffer
from ..store.objects import FileEntry, blob_parts, tensor_parts
from ..store.refs import BASES, HEADS
from ..store.view import RepoView
from .branches import target_branch
from .identity import default_author
from .sign import sign_if_asked

DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class CommitResult:
    """What ``commit`` wrote."""

    id: ObjectId
    branch: str | None
    tree: ObjectId
    new_objects: int
    new_bytes: int
    total_bytes: int


@dataclass
class _WriteStats:
    objects: int = 0
    bytes: int = 0


def store_staged(repo: RepoView, staged: Staged, progress: ProgressFactory,
                 names: dict[str, str] | None = None) -> tuple[ObjectId, _WriteStats]:
    """Store a validated, memory-mapped import tensor by tensor (each page dropped once stored) and its tree."""
    stats = _WriteStats()
    advance = progress(f"storing {staged.source.name}", staged.nbytes)
    entries = {}

    def done(name: str, oid: ObjectId, new: bool) -> None:
        t = staged.tensors[name]
        if new:
            stats.objects += 1
            stats.bytes += repo.store.size(oid)
        entries[name] = TensorEntry(oid, t.dtype, t.shape)
        staged.release(name)
        advance(t.nbytes)

    repo.store.put_many(((n, tensor_parts(t.dtype, t.shape, t.data)) for n, t in staged.tensors.items()), done)

    def put(parts: list[Buffer]) -> ObjectId:
        oid, new = repo.store.put(parts)
        stats.objects, stats.bytes = stats.objects + new, stats.bytes + (repo.store.size(oid) if new else 0)
        return oid

    files = {name: FileEntry(blob=put(blob_parts(kept))) if isinstance(kept, bytes)
             else FileEntry(header=put(blob_parts(kept[0])), tensors=kept[1]) for name, kept in staged.kept.items()}
    return put([Tree(staged.kind, staged.config, entries, files, names).encode()]), stats


def commit_tree(repo: RepoView, tree: ObjectId, message: str, *, branch: str | None = None, parents: list[ObjectId] | None = None,
                base: ObjectId | None = None, op: Op | None = None, author: str | None = None,
                expected: ObjectId | None | str = "read", ref: str | None = None, reflog: str | None = None) -> ObjectId:
    """Write a commit of a stored tree and advance ``branch`` (or HEAD, or the full ref name ``ref``)
    to it if it still holds ``expected`` (by default, its value when this call starts; ``parents``
    default to that value). Objects are synced before the ref moves."""
    if branch:
        check_ref_name(branch, "branch")
    ref = ref or (HEADS + branch if branch else "HEAD")
    old = repo.refs.resolve(ref) if expected == "read" else expected
    if parents is None:
        parents = [old] if old else []
    who, op = author or default_author(), op or Op()
    oid = repo.store.write_commit(sign_if_asked(repo, Commit(tree, parents, base, who, time.time(), message, op)))
    repo.store.sync()
    repo.refs.set_if_equals(ref, old, oid, reflog or f"{op.name}: {message.splitlines()[0] if message else ''}", who)
    return oid


def commit(repo: RepoView, source: str | os.PathLike[str], message: str, *, branch: str | None = None, base: str | None = None,
           author: str | None = None, allow_empty: bool = False, progress: ProgressFactory = no_progress) -> CommitResult:
    """Import an adapter (peft dir or safetensors file), or a model fine-tuned from a base (a Hugging
    Face model directory: its files kept byte for byte, tensors equal to the base's stored once), as
    a new commit on ``branch`` (default: HEAD's). ``source``: a path, or ``hf://org/name[@revision]``
    (resolved through the Hugging Face cache; the id and its commit sha are recorded in the op)."""
    if not message.strip():
        raise BadInput("empty commit message", "pass -m MESSAGE")
    name = target_branch(repo, branch, "pass -b BRANCH to say which branch to commit on")
    path, hub = hub_source(source)
    staged = import_adapter(path, models=True)
    ref_old = repo.refs.resolve(HEADS + name)
    parent = ref_old or (repo.refs.resolve("HEAD") if branch else None)
    base_tree = base_for(repo, base, parent)
    if staged.kind == "full" and base_tree is None:
        raise BadInput(f"{path}: a model directory commits as a fine-tune of a registered base, and none is given",
                       f"pass --base NAME (the base it was fine-tuned from), or register it as a base: dithub base add NAME {path}")
    if base_tree is not None:
        check_fits(repo.store.read_tree(base_tree), staged)
    tree_oid, stats = store_staged(repo, staged, progress)
    if parent and not allow_empty and repo.store.read_commit(parent).tree == tree_oid:
        raise BadInput(f"nothing to commit: {path} is identical to {name}'s head", "use --allow-empty to commit anyway")
    oid = commit_tree(repo, tree_oid, message, branch=name, parents=[parent] if parent else [], base=base_tree,
                      op=Op(params=hub.to_json() if hub else {}), author=author, expected=ref_old)
    stats.objects += 1
    stats.bytes += repo.store.size(oid)
    return CommitResult(oid, name, tree_oid, stats.objects, stats.bytes, staged.nbytes)


@dataclass(frozen=True)
class Named:
    """A model or adapter named by a user: a dithub commit, or files (a path; a hub id's snapshot)."""

    commit: ObjectId | None = None
    path: Path | None = None
    hub: HubSource | None = None


def named_model(repo: RepoView, text: str, what: str, hint: str) -> Named:
    """What ``text`` names, in this order: an existing path, a dithub revision, ``hf://org/name``."""
    if not Path(text).exists() and not text.startswith(SCHEME):
        try:
            return Named(commit=repo.resolve(text))
        except RefNotFound:
            raise RefNotFound(f"{what} {text!r} is neither a path, a revision nor a hub id", hint) from None
    path, hub = hub_source(text)
    return Named(path=path, hub=hub)


def base_for(repo: RepoView, base: str | None, parent: ObjectId | None) -> ObjectId | None:
    """The base tree a commit records: base ``base`` by name, else the parent's."""
    if base is None:
        return repo.store.read_commit(parent).base if parent else None
    return named_base(repo, base)


def named_base(repo: RepoView, name: str) -> ObjectId:
    """The tree of base checkpoint ``name`` (RefNotFound listing the known ones)."""
    bases = repo.bases()
    if name not in bases:
        raise RefNotFound(f"unknown base {name!r} (known: {', '.join(sorted(bases)) or 'none yet'})",
                          f"add it with `dithub base add {name} MODEL_DIR`")
    return repo.store.read_commit(bases[name]).tree


def base_reference(repo: RepoView, base_tree: ObjectId) -> tuple[str, str | None]:
    """How the ecosystem names base checkpoint ``base_tree``: (hub id, the commit sha resolved) where
    it was added from the Hub, else (its name in this repository, None)."""
    for name, oid in sorted(repo.bases().items()):
        commit = repo.store.read_commit(oid)
        if commit.tree == base_tree:
            hub, revision = commit.op.params.get("hub"), commit.op.params.get("revision")
            if isinstance(hub, str):
                return hub, revision if isinstance(revision, str) else None
            return name, None
    return base_tree[:12], None


def base_add(repo: RepoView, name: str, source: str | os.PathLike[str], *, message: str | None = None,
             progress: ProgressFactory = no_progress) -> CommitResult:
    """Register a Hugging Face model directory (a path, or ``hf://org/name[@revision]``) as base checkpoint ``name``."""
    check_ref_name(name, "base")
    ref = BASES + name
    old = repo.refs.resolve(ref)
    path, hub = hub_source(source)
    staged = import_model_dir(path)
    renamed = {k: v for k, v in model_names(staged.config, staged.tensors).items() if k != v}  # once, so commits need no transformers
    tree_oid, stats = store_staged(repo, staged, progress, renamed)
    oid = commit_tree(repo, tree_oid, message or f"base {name} from {str(source) if hub else path.name}", parents=[old] if old else [],
                      op=Op("base", params=hub.to_json() if hub else {}), expected=old, ref=ref, reflog=f"base add: {name}")
    return CommitResult(oid, None, tree_oid, stats.objects + 1, stats.bytes, staged.nbytes)
