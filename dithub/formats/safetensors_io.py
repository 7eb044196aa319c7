"""Read and write safetensors files without copying tensor bytes.

The reader validates the header against the file (sizes, offsets, overlaps, truncation) before any
byte is trusted; the writer streams raw buffers into an atomic temp file. Neither needs torch.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadInput
from ..store import DTYPE_SIZES, TensorData, nbytes_of
from ..store.atomic import atomic_file, pwrite_chunks

MAX_HEADER_BYTES = 100 << 20
WRITERS = 3
DTYPE_ORDER = {name: i for i, name in enumerate(("U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
                                                 "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"))}
"""The order the safetensors library writes dtypes in (its ``Dtype`` enum, descending)."""
Buffer = bytes | bytearray | memoryview


@dataclass
class SafetensorsFile:
    """A validated, memory-mapped safetensors file."""

    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorData]
    _mm: mmap.mmap | None = None
    _spans: dict[str, tuple[int, int]] | None = None
    header: bytes = b""
    """The header as the file holds it (its JSON and padding, without the 8-byte length)."""
    size: int = 0

    @property
    def order(self) -> tuple[str, ...] | None:
        """The tensors in the order their bytes fill the data section, or None where the section
        holds anything else (gaps, overlaps): what rebuilds the file from its header and tensors."""
        spans = sorted((b, e, n) for n, (b, e) in (self._spans or {}).items())
        at = 8 + len(self.header)
        for begin, end, _name in spans:
            if begin != at:
                return None
            at = end
        return tuple(n for _b, _e, n in spans) if at == self.size else None

    def release(self, name: str) -> None:
        """Drop a tensor's pages from this process (they stay in the page cache): the resident
        memory of a streaming pass stays at about one tensor."""
        if self._mm is None or not self._spans or name not in self._spans:
            return
        begin, end = self._spans[name]
        start = begin - begin % mmap.PAGESIZE
        if end > start:
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def _bad(path: Path, what: str, hint: str = "re-export the file, or check that it was fully copied") -> BadInput:
    return BadInput(f"{path}: {what}", hint)


def read_safetensors(path: Path) -> SafetensorsFile:
    """Open and validate ``path``; tensor bytes stay in the page cache (mmap)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file", "check the path")
    if not path.is_file():
        raise BadInput(f"{path}: not a file", "give a .safetensors file")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise _bad(path, f"not a safetensors file (only {size} bytes)")
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    (header_len,) = struct.unpack("<Q", mm[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise _bad(path, f"header claims {header_len} bytes but the file has {size}: truncated or not safetensors")
    try:
        header = json.loads(bytes(mm[8 : 8 + header_len]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _bad(path, "__metadata__ is not an object")
    data = memoryview(mm)[8 + header_len :]
    tensors = _entries(path, header, data)
    spans = {n: (8 + header_len + int(header[n]["data_offsets"][0]), 8 + header_len + int(header[n]["data_offsets"][1]))
             for n in tensors}
    return SafetensorsFile(path, {str(k): str(v) for k, v in metadata.items()}, tensors, mm, spans, bytes(mm[8:8 + header_len]), size)


def _entries(path: Path, header: dict[str, Any], data: memoryview) -> dict[str, TensorData]:
    spans = []
    tensors: dict[str, TensorData] = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(d) for d in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"tensor {name!r} has a malformed header entry: {info!r}") from None
        if dtype not in DTYPE_SIZES:
            raise _bad(path, f"tensor {name!r} has unsupported dtype {dtype!r}",
                       f"supported: {', '.join(sorted(DTYPE_SIZES))}")
        if any(d < 0 for d in shape) or begin < 0 or end < begin:
            raise _bad(path, f"tensor {name!r} has a negative size or offset")
        expected = nbytes_of(dtype, shape)
        if end - begin != expected:
            raise _bad(path, f"tensor {name!r}: header says {end - begin} bytes but {dtype}{list(shape)} needs {expected}")
        if end > len(data):
            raise _bad(path, f"truncated: tensor {name!r} ends at byte {end} of data but the file holds {len(data)}")
        spans.append((begin, end, name))
        tensors[name] = TensorData(dtype, shape, data[begin:end])
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _bad(path, f"tensors {n0!r} and {n1!r} overlap in the file")
    return tensors


class _Spec(Protocol):
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...


def write_safetensors(path: Path, specs: Mapping[str, _Spec], load: Callable[[str], Buffer | Iterable[Buffer]] | None = None,
                      metadata: Mapping[str, str] | None = None, on_bytes: Callable[[int], None] | None = None) -> None:
    """Write tensors atomically to ``path``, laid out as the safetensors library lays them out (by
    dtype, then name: a file it wrote comes back byte for byte). ``specs`` gives each tensor's dtype
    and shape; ``load(name)`` its bytes (or an iterable of chunks), called once per tensor while
    writing, so tensors stream one at a time. Without ``load`` the specs must be ``TensorData``."""
    names = sorted(specs, key=lambda n: (DTYPE_ORDER.get(specs[n].dtype, len(DTYPE_ORDER)), n))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in names:
        size = nbytes_of(specs[name].dtype, specs[name].shape)
        header[name] = {"dtype": specs[name].dtype, "shape": list(specs[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    write_layout(path, head + b" " * (-len(head) % 8), names, specs, load, on_bytes)


def write_layout(path: Path, header: bytes, order: Sequence[str], specs: Mapping[str, _Spec],
                 load: Callable[[str], Buffer | Iterable[Buffer]] | None = None, on_bytes: Callable[[int], None] | None = None) -> None:
    """Write a safetensors file atomically from its ``header`` bytes and the tensors that fill its
    data section, in ``order`` (a file read by ``read_safetensors`` comes back byte for byte)."""
    base, at, spans = 8 + len(header), 0, {}
    for name in order:
        spans[name] = (at, at + nbytes_of(specs[name].dtype, specs[name].shape))
        at = spans[name][1]

    def write_tensor(fd: int, name: str) -> int:
        data = load(name) if load else specs[name].data  # type: ignore[attr-defined]
        begin, end = spans[name]
        chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        written = pwrite_chunks(fd, chunks, base + begin)
        if written != end - begin:
            raise BadInput(f"tensor {name!r}: {written} bytes where {end - begin} were declared")
        return written

    with atomic_file(Path(path)) as fd:
        pwrite_chunks(fd, [struct.pack("<Q", len(header)) + header], 0)
        # tensors go to their own offsets from a few threads: reading, hashing and
        # computing one overlaps writing another
        with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="dithub-export") as pool:
            futures = [pool.submit(write_tensor, fd, name) for name in order]
            try:
                for fut in futures:
                    n = fut.result()
                    if on_bytes:
                        on_bytes(n)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
