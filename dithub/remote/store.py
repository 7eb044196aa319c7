"""A remote's objects as an object store, so that work can run against the remote itself (the store
of record) rather than a local clone: each read re-hashed (``Location.read_object``), each write a
loose object published whole. Nothing is ever deleted through it."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import RemoteError
from ..store import ObjectId
from ..store.ids import Buffer
from ..store.objectstore import BaseObjectStore
from .location import Location


class RemoteObjectStore(BaseObjectStore):
    """The objects at a remote ``Location``."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.hash = loc.hash  # objects written here are named as the remote names them
        self._known: set[ObjectId] | None = None

    def contains(self, oid: ObjectId) -> bool:
        if self._known is None:
            self._known = self.loc.object_ids()
        return oid in self._known

    def _store(self, oid: ObjectId, parts: Sequence[Buffer]) -> None:
        self.loc.write_object(oid, b"".join(bytes(p) for p in parts))
        if self._known is not None:
            self._known.add(oid)

    def _load(self, oid: ObjectId) -> memoryview:
        return memoryview(self.loc.read_object(oid))

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(self.loc.object_ids())

    def delete(self, oid: ObjectId) -> None:
        raise RemoteError(f"remote {self.loc.name}: objects are not deleted through a remote store")


def open_remote(url: str, name: str, options: Mapping[str, Any] | None) -> RemoteObjectStore:
    """The store of the remote at ``url`` (picklable arguments: what a worker process opens)."""
    return RemoteObjectStore(Location(url, name, options))
