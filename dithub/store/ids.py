"""Object ids: the xxh3-128 hex digest of an object's canonical bytes."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import xxhash

ObjectId = str
"""32 lowercase hex characters."""
Buffer = bytes | bytearray | memoryview
"""What objects are made of: any contiguous bytes."""

_OID_RE = re.compile(r"^[0-9a-f]{32}$")


def object_id(data: bytes | memoryview) -> ObjectId:
    """The id of bytes held in memory."""
    return xxhash.xxh3_128_hexdigest(data)


def object_id_of_parts(parts: Iterable[Buffer]) -> ObjectId:
    """The id of the concatenation of ``parts``, without concatenating them."""
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def is_object_id(text: str) -> bool:
    """True for a full, well-formed object id."""
    return bool(_OID_RE.match(text))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form of a JSON value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
