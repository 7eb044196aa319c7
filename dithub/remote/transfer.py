"""Moving objects between a local store and a remote: only what the other side lacks.

The walk starts at the wanted commits and stops at objects the receiving side has (a local store
is closed under reachability; the remote's object list comes from one listing). Commits and trees
are read during the walk, many at a time; tensors are sent afterwards, concurrently, with their
bytes counted. The receiver stores dependencies before what depends on them — tensors, then trees,
then commits from the oldest — so an interrupted transfer leaves only complete objects behind, and
running it again skips what already arrived. Refs move last.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import CorruptObject, RemoteError
from ..progress import ProgressFactory
from ..store import BaseObjectStore, DiskObjectStore, ObjectId, object_id, object_type
from ..store.objects import decode_commit, decode_tree
from .location import WORKERS, Location


@dataclass
class Plan:
    """What one transfer sends: small objects (already read) in a safe order, tensor ids."""

    small: list[tuple[ObjectId, bytes]] = field(default_factory=list)
    """Trees, then commits from the oldest: each after everything it names."""
    tensors: list[ObjectId] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.small) + len(self.tensors)


def plan(roots: Iterable[ObjectId], have: Callable[[ObjectId], bool], read_many: Callable[[list[ObjectId]], dict[ObjectId, bytes]],
         *, with_base: bool, where: str) -> Plan:
    """Walk from ``roots`` through objects the receiver lacks."""
    seen: set[ObjectId] = set()
    commits: list[tuple[ObjectId, bytes]] = []
    trees: list[tuple[ObjectId, bytes]] = []
    tensors: list[ObjectId] = []
    frontier = [r for r in dict.fromkeys(roots) if not have(r)]
    seen.update(frontier)
    while frontier:
        found = read_many(frontier)
        frontier = []
        for oid, data in found.items():
            kind = object_type(data)
            try:
                if kind == "commit":
                    c = decode_commit(oid, data)
                    commits.append((oid, data))
                    names = [c.tree, *c.parents] + ([c.base] if c.base and with_base else [])
                elif kind == "tree":
                    trees.append((oid, data))
                    for e in decode_tree(oid, data).tensors.values():
                        if e.id not in seen and not have(e.id):
                            seen.add(e.id)
                            tensors.append(e.id)
                    continue
                else:
                    raise CorruptObject(f"object {oid} is a {kind}, where a commit or tree was expected")
            except CorruptObject as exc:
                raise RemoteError(f"{where}: {exc.message}", "the sending side is damaged; run `dithub fsck` there") from None
            for n in names:
                if n not in seen and not have(n):
                    seen.add(n)
                    frontier.append(n)
    return Plan(trees[::-1] + commits[::-1], tensors)


def dependency_order(objects: dict[ObjectId, bytes], present: Callable[[ObjectId], bool], where: str) -> list[tuple[ObjectId, bytes]]:
    """The objects that can be stored with everything they name (here or already ``present``), in
    an order safe to store: tensors, trees, then commits after their parents. The others are left
    out (a listing can be older than the objects it names); a walk fetches what they need."""
    kinds = {oid: object_type(data) for oid, data in objects.items()}
    names: dict[ObjectId, list[ObjectId]] = {}
    try:
        for oid, data in objects.items():
            if kinds[oid] == "tree":
                names[oid] = [e.id for e in decode_tree(oid, data).tensors.values()]
            elif kinds[oid] == "commit":
                c = decode_commit(oid, data)
                names[oid] = [c.tree, *c.parents]  # the base is optional (a selective fetch leaves it out)
    except CorruptObject as exc:
        raise RemoteError(f"{where}: {exc.message}") from None
    ok: dict[ObjectId, bool] = {}
    ordered: list[ObjectId] = []
    for start in [o for o in objects if kinds[o] == "tensor"] + [o for o in objects if kinds[o] != "tensor"]:
        stack = [(start, False)]
        while stack:  # depth-first, dependencies first
            oid, expanded = stack.pop()
            if oid in ok:
                continue
            if oid not in objects:
                ok[oid] = present(oid)
                continue
            deps = names.get(oid, [])
            if expanded:
                ok[oid] = kinds[oid] in ("tensor", "tree", "commit") and all(ok.get(d, False) for d in deps)
                if ok[oid]:
                    ordered.append(oid)
            else:
                stack.append((oid, True))
                stack.extend((d, False) for d in deps if d not in ok)
    return [(o, objects[o]) for o in ordered]


def send_tensors(ids: list[ObjectId], copy: Callable[[ObjectId, Callable[[int], None]], None], size: Callable[[ObjectId], int],
                 progress: ProgressFactory, what: str) -> int:
    """Run ``copy(oid, advance)`` on every object concurrently under one progress bar of bytes
    (``copy`` reports its bytes as they stream); returns the bytes sent."""
    total = sum(size(i) for i in ids)
    advance = progress(what, total)

    def one(oid: ObjectId) -> int:
        copy(oid, advance)
        return size(oid)

    with ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(one, ids))


def receive_large(store: BaseObjectStore, location: Location, oid: ObjectId, size: int,
                  advance: Callable[[int], None] = lambda n: None) -> int | None:
    """Download a large loose object straight into the store's temp folder, re-hash it there and
    move it into place (no copy through memory); None where that does not apply (a packed object,
    a store in memory): read it and store it instead."""
    if not isinstance(store, DiskObjectStore) or oid in location.packed(refresh=False):
        return None
    try:
        store.receive(oid, lambda path: location.download(oid, path, advance, size), size)
    except CorruptObject:
        raise location.corrupt(oid) from None
    return store.size(oid)


def receive_one(store: BaseObjectStore, location: Location, oid: ObjectId, size: int,
                advance: Callable[[int], None] = lambda n: None) -> int:
    """Bring one object into ``store``: a large loose one streamed to disk, any other read whole;
    re-hashed either way. Returns its size."""
    n = receive_large(store, location, oid, size, advance)
    if n is None:
        data = location.read_object(oid)
        store_verified(store, location)(oid, data)
        advance(len(data))
        n = len(data)
    return n


def store_verified(store: BaseObjectStore, location: Location) -> Callable[[ObjectId, bytes | memoryview], None]:
    """A writer into the local store that refuses bytes that do not hash to their id."""
    def write(oid: ObjectId, data: bytes | memoryview) -> None:
        if object_id(data) != oid:
            raise location.corrupt(oid)
        store.put([data])

    return write
