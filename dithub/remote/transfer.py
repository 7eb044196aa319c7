"""Moving objects between a local store and a remote: only what the other side lacks.

The walk starts at the wanted commits and stops at objects the receiving side has (a local store
is closed under reachability; the remote's object list comes from one listing). Commits and trees
are read during the walk, many at a time; tensors are sent afterwards, concurrently, with their
bytes counted. The receiver stores dependencies before what depends on them — tensors, then trees,
then commits from the oldest — so an interrupted transfer leaves only complete objects behind, and
running it again skips what already arrived. Refs move last.

What a remote sends is untrusted: a ``Receiver`` stores an object only once its bytes hash to its
id, it parses as its kind within bounds (``store.objects``), and everything it names is stored
already, of the kind — for a tensor, the dtype and shape — that the naming object says.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ..errors import CorruptObject, ObjectNotFound, RemoteError
from ..progress import ProgressFactory
from ..store import BaseObjectStore, ObjectId, object_type
from ..store.graph import complete, objects, walk
from ..store.objects import MAX_JSON_BYTES, Link, inspect, parse_tensor_header
from ..store.objectstore import PEEK_BYTES
from .location import WORKERS, Location
from .packs import PACKED_BELOW

Kind = tuple[str, str | None, tuple[int, ...] | None]
"""(kind, dtype, shape) of an object: dtype and shape for tensors only."""


@dataclass
class Plan:
    """What one transfer sends: small objects (already read) in a safe order, tensor ids."""

    small: list[tuple[ObjectId, bytes]] = field(default_factory=list)
    """Trees, then commits from the oldest: each after everything it names."""
    tensors: list[ObjectId] = field(default_factory=list)
    expect: dict[ObjectId, Link] = field(default_factory=dict)
    """What the trees say each tensor is (dtype, shape)."""

    @property
    def count(self) -> int:
        return len(self.small) + len(self.tensors)


def plan(roots: Iterable[ObjectId], have: Callable[[ObjectId], bool], read_many: Callable[[list[ObjectId]], dict[ObjectId, bytes]],
         *, with_base: bool, where: str) -> Plan:
    """Walk from ``roots`` through objects the receiver lacks (``store.graph.walk``)."""
    commits: list[tuple[ObjectId, bytes]] = []
    trees: list[tuple[ObjectId, bytes]] = []
    tensors: list[ObjectId] = []
    expect: dict[ObjectId, Link] = {}
    try:
        for visit in walk(objects(dict.fromkeys(roots)), read_many, skip=have, with_base=with_base):
            link = visit.link
            if link.kind == "tensor":
                tensors.append(link.id)
                expect[link.id] = link
            elif visit.data is not None:
                (commits if link.kind == "commit" else trees).append((link.id, bytes(visit.data)))
    except CorruptObject as exc:
        raise RemoteError(f"{where}: {exc.message}", "the sending side is damaged; run `dithub fsck` there") from None
    return Plan(trees[::-1] + commits[::-1], tensors, expect)


def send_tensors(ids: list[ObjectId], copy: Callable[[ObjectId, Callable[[int], None]], None], size: Callable[[ObjectId], int],
                 progress: ProgressFactory, what: str) -> int:
    """Run ``copy(oid, advance)`` on every object concurrently under one progress bar of bytes
    (``copy`` reports its bytes as they stream); returns the bytes sent."""
    total = sum(size(i) for i in ids)
    advance = progress(what, total)

    def one(oid: ObjectId) -> int:
        copy(oid, advance)
        return size(oid)

    with ThreadPoolExecutor(WORKERS) as pool:  # the first failure cancels what has not started
        futures = [pool.submit(one, oid) for oid in ids]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            for f in pending:
                f.cancel()
            raise failed.exception()  # type: ignore[misc]
        return sum(f.result() for f in futures)


class _NotATensor(Exception):
    """A large loose object that is not a tensor: read it whole instead (and check it as such)."""


class Receiver:
    """Stores what ``location`` sends into ``store``, once checked (see the module docstring)."""

    def __init__(self, store: BaseObjectStore, location: Location) -> None:
        self.store, self.location = store, location
        self.where = f"remote {location.name} ({location.url})"
        self._known: dict[ObjectId, Kind] = {}
        self._lock = threading.Lock()

    def refuse(self, oid: ObjectId, why: str) -> RemoteError:
        return RemoteError(f"{self.where} sent object {oid}, which {why}",
                           "nothing of it was stored; repair the remote (push to it from a good repository)")

    def _note(self, oid: ObjectId, kind: Kind) -> None:
        with self._lock:
            self._known[oid] = kind

    def kind_here(self, oid: ObjectId) -> Kind | None:
        """(kind, dtype, shape) of an object stored here, or None if it is not."""
        with self._lock:
            if oid in self._known:
                return self._known[oid]
        if not self.store.contains(oid):
            return None
        head = self.store.peek(oid, PEEK_BYTES)
        kind = object_type(head)
        if kind != "tensor":
            return (kind, None, None)
        try:
            dtype, shape, _offset = parse_tensor_header(oid, head, self.store.size(oid))
        except (CorruptObject, ObjectNotFound):
            return None  # damaged here: as good as absent
        return ("tensor", dtype, shape)

    def _mismatch(self, link: Link, have: Kind) -> str | None:
        if have[0] != link.kind:
            return f"names {link.id} as a {link.kind}, but that object is a {have[0]}"
        if link.kind == "tensor" and (have[1], have[2]) != (link.dtype, link.shape):
            return f"names tensor {link.id} as {link.dtype} {list(link.shape or ())}, but it is {have[1]} {list(have[2] or ())}"
        return None

    def _check(self, oid: ObjectId, data: bytes) -> tuple[Kind, list[Link]]:
        """What ``data`` is and what it names, parsed once; RemoteError if it does not parse."""
        try:
            kind, dtype, shape, named = inspect(oid, data)
        except CorruptObject as exc:
            raise self.refuse(oid, f"is malformed: {exc.message}") from None
        return (kind, dtype, shape), named

    def _absent(self, oid: ObjectId, named: list[Link], held: Mapping[ObjectId, Kind] | None = None) -> list[Link]:
        """The links that are neither stored here nor ``held``; RemoteError for one that is, but
        is not what it says."""
        out = []
        for link in named:
            have = (held or {}).get(link.id) or self.kind_here(link.id)
            if have is None:
                out.append(link)
            elif why := self._mismatch(link, have):
                raise self.refuse(oid, why)
        return out

    def missing(self, oid: ObjectId, data: bytes) -> list[Link]:
        """What ``data`` names that is not stored yet (RemoteError if it does not parse, or names
        something stored that is not what it says)."""
        return self._absent(oid, self._check(oid, data)[1])

    def _store(self, oid: ObjectId, data: bytes | memoryview, kind: Kind) -> None:
        self.store.put([data])
        self._note(oid, kind)

    def put_held(self, objects: dict[ObjectId, bytes], *, strict: bool) -> list[ObjectId]:
        """Store the held ``objects`` (read and re-hashed) whose dependencies are stored here or
        held, dependencies first (tensors, trees, commits after their parents); returns those
        stored. The others name what is neither: ``strict``, that is a RemoteError naming the first;
        otherwise they are left out (a listing can be older than the objects it names; a walk
        then fetches what they need)."""
        checked = {oid: self._check(oid, data) for oid, data in objects.items()}
        held = {oid: kind for oid, (kind, _named) in checked.items()}
        blocked: dict[ObjectId, ObjectId] = {}
        for oid, (_kind, named) in checked.items():
            gone = [link.id for link in self._absent(oid, named, held) if not link.optional]
            if gone:
                blocked[oid] = gone[0]
        ok: dict[ObjectId, bool] = {}
        ordered: list[ObjectId] = []
        inside = lambda oid: [link.id for link in checked[oid][1] if link.id in objects]  # noqa: E731
        for start in objects:
            complete(start, inside, lambda oid: oid not in blocked, ok, ordered.append)
        for oid in ordered:
            self._store(oid, objects[oid], held[oid])
        if strict and len(ordered) < len(objects):
            oid = next(o for o in objects if not ok.get(o))
            first = blocked.get(oid) or next(link.id for link in checked[oid][1] if link.id in objects and not ok.get(link.id))
            raise self.refuse(oid, f"names {first}, which the remote does not hold (or cannot be stored)")
        return ordered

    def bring(self, oid: ObjectId, size: int, advance: Callable[[int], None] = lambda n: None, expect: Link | None = None,
              missing_ok: bool = False) -> bytes | None:
        """Bring one remote object of ``size`` bytes (as listed; 0: unknown): a large loose tensor
        straight into the store's temp folder, re-hashed and its header checked there (``expect``:
        what the tree naming it says it is), then moved into place — None; anything else read whole,
        verified and within the bounds of its kind, its bytes returned for the caller to store
        (``missing_ok``: FileNotFoundError for an object the remote does not hold)."""
        loose = oid not in self.location.packed(refresh=False)
        if loose and (size >= PACKED_BELOW or not size):
            found: list[Kind] = []

            def check(head: bytes, total: int) -> None:
                if object_type(head) != "tensor":
                    raise _NotATensor
                try:
                    dtype, shape, _offset = parse_tensor_header(oid, head, total)
                except CorruptObject as exc:
                    raise self.refuse(oid, f"is malformed: {exc.message}") from None
                if expect is not None and (why := self._mismatch(expect, ("tensor", dtype, shape))):
                    raise self.refuse(oid, f"was asked for by a tree that {why}")
                found.append(("tensor", dtype, shape))

            try:
                self.store.receive(oid, lambda path: self.location.download(oid, path, advance, size), size, check)
                if found:
                    self._note(oid, found[0])
                return None
            except CorruptObject:
                raise self.location.corrupt(oid) from None
            except _NotATensor:
                pass  # read it whole, and check it as what it is
        if size > MAX_JSON_BYTES and loose:
            raise self.refuse(oid, f"is {size} bytes and not a tensor stored as one")
        data = self.location.read_object(oid, missing_ok=missing_ok)
        advance(len(data))
        return data

    def tensor(self, oid: ObjectId, size: int, advance: Callable[[int], None], expect: Link) -> None:
        """Bring one tensor (``expect``: what the tree naming it says it is) into the store."""
        try:
            data = self.bring(oid, size, advance, expect)
        except FileNotFoundError:
            raise self.location.lacks(oid) from None
        if data is not None:
            kind, _named = self._check(oid, data)
            if why := self._mismatch(expect, kind):
                raise self.refuse(oid, f"was asked for by a tree that {why}")
            self._store(oid, data, kind)
