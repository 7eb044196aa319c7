"""Packs: many small objects in one remote file, so a history of thousands of commits travels in a
few requests rather than one per object.

A pack ``packs/<id>.pack`` is the plain concatenation of whole objects (their bytes as loose
objects); its index ``packs/<id>.idx`` is canonical JSON naming each object's offset and length.
``<id>`` is the remote's object hash (``Location.hash``) of the pack's bytes. The index is written after the pack, and only
indexed packs count, so a push killed between the two leaves an unused file, never a pack whose
objects seem present and are not. Indexes never change once written: a client caches them. Every
object read out of a pack is re-hashed like a loose one.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import RemoteError
from ..store import LEGACY_HASH, Hash, ObjectId, is_object_id

PACKED_BELOW = 1 << 20
"""Objects smaller than this travel in packs; larger ones (big tensors) as loose objects."""
PACK_BYTES = 64 << 20
"""A pack holds at most this many bytes (more objects start another pack)."""


@dataclass(frozen=True)
class Pack:
    id: str
    data: bytes
    index: dict[ObjectId, tuple[int, int]]
    """Object id -> (offset, length) in ``data``."""

    def index_bytes(self) -> bytes:
        objects = {o: list(v) for o, v in sorted(self.index.items())}
        return json.dumps({"format": 1, "pack": self.id, "objects": objects}, separators=(",", ":")).encode()


def build_packs(objects: Iterable[tuple[ObjectId, bytes | memoryview]], hash: Hash = LEGACY_HASH,
                limit: int | None = None) -> list[Pack]:
    """Group ``objects`` into packs of at most ``limit`` bytes (an object larger than it gets a
    pack of its own), in the given order; a pack is named by ``hash`` of its bytes (the remote's)."""
    limit = PACK_BYTES if limit is None else limit
    packs: list[Pack] = []
    parts: list[bytes | memoryview] = []
    index: dict[ObjectId, tuple[int, int]] = {}
    size = 0
    seen: set[ObjectId] = set()

    def close() -> None:
        nonlocal parts, index, size
        if parts:
            data = b"".join(parts)
            packs.append(Pack(hash.of(data), data, index))
        parts, index, size = [], {}, 0

    for oid, data in objects:
        if oid in seen:
            continue
        seen.add(oid)
        if size and size + len(data) > limit:
            close()
        index[oid] = (size, len(data))
        parts.append(data)
        size += len(data)
    close()
    return packs


def decode_index(pack_id: str, data: bytes, where: str) -> dict[ObjectId, tuple[int, int]]:
    """The index of pack ``pack_id``; a damaged one is a RemoteError naming it."""
    try:
        doc = json.loads(data)
        if doc.get("format") != 1 or doc.get("pack") != pack_id:
            raise ValueError("it names another pack or format")
        out = {}
        for oid, (offset, length) in doc["objects"].items():
            if not is_object_id(oid) or int(offset) < 0 or int(length) < 0:
                raise ValueError(f"bad entry {oid!r}")
            out[oid] = (int(offset), int(length))
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RemoteError(f"{where}: the index of pack {pack_id} is damaged ({exc})",
                          "repair the remote: push again from a complete clone") from None
