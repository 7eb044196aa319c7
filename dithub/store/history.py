"""Revision parsing and history walks over the commit DAG."""
from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import BadInput, RefNotFound
from . import BaseObjectStore, BaseRefStore, Commit, ObjectId, is_object_id
from .refs import NAMESPACES

_SUFFIX = re.compile(r"(~\d*|\^\d*)$")
REF_PREFIXES = ("", "refs/", *NAMESPACES)


def expand_ref(refs: BaseRefStore, name: str) -> str | None:
    """The full ref name a short name stands for (git's lookup order)."""
    for prefix in REF_PREFIXES:
        full = prefix + name
        if (full == "HEAD" or full.startswith("refs/") or full == "ORIG_HEAD") and refs.read_raw(full) is not None:
            return full
    return None


def _by_prefix(store: BaseObjectStore, prefix: str) -> ObjectId | None:
    if is_object_id(prefix):
        return prefix if store.contains(prefix) else None
    if len(prefix) < 4 or not re.fullmatch(r"[0-9a-f]+", prefix):
        return None
    hits = [oid for oid in store if oid.startswith(prefix)]
    if len(hits) > 1:
        raise BadInput(f"short id {prefix!r} is ambiguous ({len(hits)} objects)", "give more characters")
    return hits[0] if hits else None


def resolve_rev(store: BaseObjectStore, refs: BaseRefStore, rev: str) -> ObjectId:
    """A commit id from a ref name, tag, base, (short) id, with ``~N`` / ``^N`` suffixes."""
    steps: list[str] = []
    base = rev
    while (m := _SUFFIX.search(base)) and base != m.group(0):
        steps.insert(0, m.group(0))
        base = base[: m.start()]
    full = expand_ref(refs, base)
    oid = refs.resolve(full) if full else _by_prefix(store, base)
    if oid is not None:
        oid = store.peel(oid)  # an annotated tag names its commit
    if oid is None:
        if full == "HEAD" or base == "HEAD":
            raise RefNotFound("HEAD points to a branch with no commits yet", "commit an adapter first")
        raise RefNotFound(f"unknown revision {rev!r}", "see `dithub branch`, `dithub tag` and `dithub log`")
    for step in steps:
        n = int(step[1:] or 1)
        if step[0] == "~":
            for _ in range(n):
                oid = _parent(store, oid, 0, rev)
        else:
            oid = _parent(store, oid, n - 1, rev) if n else oid
    return oid


def _parent(store: BaseObjectStore, oid: ObjectId, index: int, rev: str) -> ObjectId:
    parents = store.read_commit(oid).parents
    if index >= len(parents):
        raise RefNotFound(f"revision {rev!r} goes past the history (commit {oid[:12]} has {len(parents)} parents)")
    return parents[index]


@dataclass(frozen=True)
class LogEntry:
    """A commit as ``log`` lists it."""

    id: ObjectId
    commit: Commit


def walk(store: BaseObjectStore, starts: list[ObjectId], limit: int | None = None) -> Iterator[LogEntry]:
    """Commits reachable from ``starts``, newest first, each parent after all its children."""
    commits: dict[ObjectId, Commit] = {}
    children: dict[ObjectId, int] = {}
    stack = list(starts)
    while stack:  # first pass: the sub-DAG and in-degrees
        oid = stack.pop()
        if oid in commits:
            continue
        commits[oid] = store.read_commit(oid)
        for p in commits[oid].parents:
            children[p] = children.get(p, 0) + 1
            stack.append(p)
    heap = [(-commits[o].time, o) for o in set(starts) if children.get(o, 0) == 0]
    heapq.heapify(heap)
    emitted = 0
    while heap and (limit is None or emitted < limit):
        _, oid = heapq.heappop(heap)
        yield LogEntry(oid, commits[oid])
        emitted += 1
        for p in commits[oid].parents:
            children[p] -= 1
            if children[p] == 0:
                heapq.heappush(heap, (-commits[p].time, p))


def is_ancestor(store: BaseObjectStore, old: ObjectId, new: ObjectId) -> bool:
    """Whether ``old`` is ``new`` or one of its ancestors (among the commits ``store`` holds)."""
    stack, seen = [new], set()
    while stack:
        oid = stack.pop()
        if oid == old:
            return True
        if oid in seen or not store.contains(oid):
            continue
        seen.add(oid)
        stack.extend(store.read_commit(oid).parents)
    return False
