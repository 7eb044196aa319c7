"""The one walk over the object graph (its edges: ``objects.inspect``): from root links, breadth
first, reading commits and trees in batches and never a tensor's data. fsck and gc's reachability,
a transfer's plan, a push's completeness check and the bases a history uses are all this walk."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..errors import CorruptObject
from .ids import ObjectId
from .objects import Link, inspect, object_type


@dataclass(frozen=True)
class Visit:
    """One object reached: the link that named it, the object that did (None for a root), and its
    bytes (None for a link not followed, e.g. a tensor, or an object ``read_many`` did not return)."""

    link: Link
    via: ObjectId | None
    data: bytes | memoryview | None
    missing: bool = False
    """Followed, but ``read_many`` did not return it."""


def commits(ids: Iterable[ObjectId]) -> list[Link]:
    """Root links for commit ids (ref targets)."""
    return [Link(oid, "commit") for oid in ids]


def objects(ids: Iterable[ObjectId]) -> list[Link]:
    """Root links for commits, trees or tags (a ref may name an annotated tag), whichever each turns
    out to be (``ANY``)."""
    return [Link(oid, ANY) for oid in ids]


ANY = "any"
"""The kind of a root link that may name a commit or a tree."""


def walk(
    roots: Iterable[Link], read_many: Callable[[list[ObjectId]], Mapping[ObjectId, bytes | memoryview]], *,
    skip: Callable[[ObjectId], bool] = lambda oid: False, follow: Callable[[Link], bool] = lambda link: link.kind != "tensor",
    with_base: bool = True,
    corrupt: Callable[[ObjectId, CorruptObject], None] | None = None,
) -> Iterator[Visit]:
    """Every object reachable from ``roots`` once, level by level. ``skip``: objects not to visit
    (nor go past: what a receiver already has); ``follow``: links whose objects are read and
    expanded (default: commits and trees); ``with_base``: whether a commit's base is an edge. An
    object that does not parse, or is not the kind its link says, raises CorruptObject — or, with
    ``corrupt``, is reported there and treated as a leaf."""
    seen: set[ObjectId] = set()
    frontier: list[tuple[Link, ObjectId | None]] = []
    for link in roots:
        if link.id not in seen and not skip(link.id):
            seen.add(link.id)
            frontier.append((link, None))
    while frontier:
        wanted = [link.id for link, _via in frontier if follow(link)]
        found = read_many(wanted) if wanted else {}
        after: list[tuple[Link, ObjectId | None]] = []
        for link, via in frontier:
            if not follow(link):
                yield Visit(link, via, None)
                continue
            data = found.get(link.id)
            if data is None:
                yield Visit(link, via, None, missing=True)
                continue
            if link.kind == ANY and object_type(data) in ("commit", "tree", "tag"):
                link = Link(link.id, object_type(data))
            yield Visit(link, via, data)
            try:
                if object_type(data) != link.kind:
                    expected = "commit, tree or tag" if link.kind == ANY else link.kind
                    raise CorruptObject(f"object {link.id} is a {object_type(data)}, where a {expected} was expected")
                named = inspect(link.id, data, with_base=with_base)[3]
            except CorruptObject as exc:
                if corrupt is None:
                    raise
                corrupt(link.id, exc)
                continue
            for n in named:
                if n.id not in seen and not skip(n.id):
                    seen.add(n.id)
                    after.append((n, link.id))
        frontier = after


def complete(start: ObjectId, names: Callable[[ObjectId], Iterable[ObjectId]], here: Callable[[ObjectId], bool],
             memo: dict[ObjectId, bool], done: Callable[[ObjectId], None] | None = None) -> bool:
    """Whether ``start`` and everything it names, transitively, is ``here`` (memoized in ``memo``
    across calls). Depth first, dependencies first: ``done`` gets each complete object after all it
    names. A cycle (only forged ids can make one) counts as incomplete."""
    deps: dict[ObjectId, list[ObjectId]] = {}
    entered: set[ObjectId] = set()
    stack = [(start, False)]
    while stack:
        oid, expanded = stack.pop()
        if oid in memo:
            continue
        if expanded:
            memo[oid] = all(memo.get(d, False) for d in deps[oid])
            if memo[oid] and done is not None:
                done(oid)
        elif oid not in entered:
            entered.add(oid)
            if not here(oid):
                memo[oid] = False
                continue
            deps[oid] = list(names(oid))
            stack.append((oid, True))
            stack.extend((d, False) for d in deps[oid] if d not in memo)
    return memo.get(start, False)
