"""Branches, tags and HEAD: create, move (``force``), rename, delete, check out — each ref change a
compare-and-swap on the value read."""
from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import BadInput, RefNotFound
from ..store import ObjectId, check_ref_name
from ..store.objects import Tag
from ..store.view import RepoView
from ..store.refs import HEADS, TAGS
from .identity import default_author
from .sign import sign_if_asked


def target_branch(repo: RepoView, branch: str | None, hint: str) -> str:
    """``branch``, else the one HEAD is on (BadInput with ``hint`` when HEAD is detached), as a valid name."""
    branch = branch or repo.current_branch()
    if branch is None:
        raise BadInput("HEAD is detached", hint)
    check_ref_name(branch, "branch")
    return branch


def create_ref(repo: RepoView, ref: str, what: str, name: str, rev: str, force: bool,
               target: Callable[[ObjectId], tuple[ObjectId, str]] | None = None) -> ObjectId:
    """Point ``ref`` (a ``what`` called ``name``) at ``rev`` — or at what ``target`` makes of its
    commit (an object it writes, and a note for the reflog); an existing one moves only with ``force``."""
    check_ref_name(name, what)
    oid = repo.resolve(rev)
    old = repo.refs.resolve(ref)
    if old is not None and not force:
        raise BadInput(f"{what} {name!r} already exists", "use -f to move it, or choose another name")
    note = ""
    if target is not None:
        oid, note = target(oid)
    repo.refs.set_if_equals(ref, old, oid, f"{what}: created from {rev}{note}")
    return oid


def existing(repo: RepoView, prefix: str, name: str, what: str) -> ObjectId:
    """Where ref ``prefix + name`` points (RefNotFound naming the ``what`` otherwise)."""
    oid = repo.refs.resolve(prefix + name)
    if oid is None:
        raise RefNotFound(f"{what} {name!r} does not exist", f"list them with `dithub {what}`")
    return oid


def create_branch(repo: RepoView, name: str, start: str = "HEAD", force: bool = False) -> ObjectId:
    if force and name == repo.current_branch():
        raise BadInput(f"cannot force-move {name!r}: it is the current branch")
    return create_ref(repo, HEADS + name, "branch", name, start, force)


def delete_branch(repo: RepoView, name: str) -> ObjectId:
    oid = existing(repo, HEADS, name, "branch")
    if name == repo.current_branch():
        raise BadInput(f"cannot delete branch {name!r}: HEAD is on it", "checkout another branch first")
    repo.refs.delete(HEADS + name, oid)
    return oid


def rename_branch(repo: RepoView, old: str, new: str) -> None:
    oid = existing(repo, HEADS, old, "branch")
    create_ref(repo, HEADS + new, "branch", new, oid, force=False)
    if repo.current_branch() == old:
        repo.refs.set_symbolic("HEAD", HEADS + new)
    repo.refs.delete(HEADS + old, oid)


def tag(repo: RepoView, name: str, rev: str = "HEAD", force: bool = False, message: str | None = None) -> ObjectId:
    """Tag ``rev`` as ``name``: a lightweight tag (the ref names the commit), or — with a
    ``message``, or inside ``Repo.signing`` (``tag -s``) — an annotated tag object, signed there."""
    if message is None and getattr(repo, "signer", None) is None:
        return create_ref(repo, TAGS + name, "tag", name, rev, force)

    def annotated(commit: ObjectId) -> tuple[ObjectId, str]:
        obj = sign_if_asked(repo, Tag(commit, name, default_author(), time.time(), message or f"tag {name}"))
        oid = repo.store.write(obj.encode())
        repo.store.sync()  # durable before the ref names it
        return oid, " (signed)" if obj.signature else ""

    return create_ref(repo, TAGS + name, "tag", name, rev, force, annotated)


def delete_tag(repo: RepoView, name: str) -> ObjectId:
    oid = existing(repo, TAGS, name, "tag")
    repo.refs.delete(TAGS + name, oid)
    return oid


def checkout(repo: RepoView, rev: str) -> ObjectId:
    """Move HEAD: onto a branch (symbolic) or to a commit (detached)."""
    branches = repo.branches()
    if rev in branches:
        repo.refs.set_symbolic("HEAD", HEADS + rev)
        return branches[rev]
    oid = repo.resolve(rev)
    repo.refs.set_detached("HEAD", oid, f"checkout: moving to {rev}")
    return oid


def reset(repo: RepoView, rev: str, author: str = "dithub") -> tuple[str | None, ObjectId | None, ObjectId]:
    """Move the current branch (or a detached HEAD) to ``rev``, as ``git reset`` does: logged, and the
    old head kept as ``ORIG_HEAD``. dithub has no working tree, so there is no soft or hard to choose.
    Returns (branch or None, old head, new head)."""
    oid = repo.resolve(rev)
    branch = repo.current_branch()
    old = repo.refs.resolve("HEAD")
    message = f"reset: moving to {rev}"
    if branch is None:
        if old is None:
            raise BadInput("HEAD names no commit", "check out a branch or commit first")
        repo.refs.set_detached("HEAD", oid, message, author)
    else:
        repo.refs.set_if_equals(HEADS + branch, old, oid, message, author)
    if old is not None:
        repo.refs.set_detached("ORIG_HEAD", old, message, author)
    return branch, old, oid


def class_branches(repo: RepoView, classes: list[str], prefix: str = "class/") -> tuple[list[str], list[str]]:
    """The branches named ``prefix + class`` for each class that has one, and the classes that have
    none (DitHub fetches class modules by the class names a prompt holds, and skips unknown ones)."""
    known = repo.branches()
    wanted = [c.strip() for c in classes if c.strip()]
    return [prefix + c for c in wanted if prefix + c in known], [c for c in wanted if prefix + c not in known]
