"""Object ids: the digest of an object's canonical bytes, by the repository's hash.

Two hashes (issue 26): ``blake3`` (BLAKE3-256, 64 hex characters: collision-resistant, the default
for new repositories) and ``xxh3`` (xxh3-128, 32 hex characters: fast, catches accidents but not an
adversary; every repository made before issue 26). A repository records its hash in its config and
every store, remote and transfer hashes with it; ``dithub migrate --hash blake3`` converts.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import xxhash

ObjectId = str
"""Lowercase hex: 64 characters (BLAKE3-256) or 32 (xxh3-128)."""
Buffer = bytes | bytearray | memoryview
"""What objects are made of: any contiguous bytes."""

_OID_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")


class Hasher(Protocol):
    def update(self, data: Buffer, /) -> Any: ...

    def hexdigest(self) -> str: ...


BLAKE3_THREADS_FROM = 8 << 20
"""Objects at least this large are hashed by BLAKE3 on several threads (its tree mode; the same
digest), smaller ones on one (thread start-up would cost more than it saves)."""


def _bytes(part: Buffer) -> memoryview:
    """``part`` as a flat view of unsigned bytes (BLAKE3 takes no other item type)."""
    view = memoryview(part)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _blake3(size_hint: int = 0) -> Hasher:
    import blake3

    return blake3.blake3(max_threads=blake3.blake3.AUTO if size_hint >= BLAKE3_THREADS_FROM else 1)


@dataclass(frozen=True)
class Hash:
    """One way of naming objects: its name, the length of its hex ids and its incremental hasher."""

    name: str
    hex_len: int
    new: Callable[[int], Hasher]
    """A fresh hasher; the argument is the expected size in bytes (0: unknown)."""

    def of(self, data: Buffer) -> ObjectId:
        """The id of bytes held in memory."""
        return self.of_parts([data])

    def of_parts(self, parts: Iterable[Buffer]) -> ObjectId:
        """The id of the concatenation of ``parts`` (any contiguous buffers, whatever their item
        type), without concatenating them."""
        views = [_bytes(p) for p in parts]
        h = self.new(sum(len(v) for v in views))
        for view in views:
            h.update(view)
        return h.hexdigest()

    def names(self, oid: str) -> bool:
        """Whether ``oid`` is a well-formed id of this hash."""
        return len(oid) == self.hex_len and bool(_OID_RE.match(oid))


def _xxh3(size_hint: int = 0) -> Hasher:
    return xxhash.xxh3_128()


XXH3 = Hash("xxh3", 32, _xxh3)
BLAKE3 = Hash("blake3", 64, _blake3)
HASHES = {h.name: h for h in (BLAKE3, XXH3)}
DEFAULT_HASH = BLAKE3
"""What ``dithub init`` uses; a repository or remote whose config names no hash is ``xxh3``."""
LEGACY_HASH = XXH3


def hash_named(name: str) -> Hash:
    """The hash called ``name`` (ValueError for another: callers say where the name came from)."""
    if name not in HASHES:
        raise ValueError(f"unknown object hash {name!r} (known: {', '.join(HASHES)})")
    return HASHES[name]


def object_id(data: bytes | memoryview, hash: Hash = LEGACY_HASH) -> ObjectId:
    """The id of bytes held in memory, by ``hash``."""
    return hash.of(data)


def is_object_id(text: str) -> bool:
    """True for a full, well-formed object id of either hash."""
    return bool(_OID_RE.match(text))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form of a JSON value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
