"""Content-addressed object stores: on disk (loose objects) and in memory. Both verify every read:
bytes that no longer hash to their id raise ``CorruptObject`` naming the object. Tensor objects are
read zero-copy (a private mmap) from disk."""
from __future__ import annotations

import contextlib
import io
import mmap
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import CorruptObject, ObjectNotFound
from . import files
from .atomic import atomic_write_parts, fsync_dir
from .ids import LEGACY_HASH, Buffer, Hash, ObjectId
from .objects import (Commit, Tag, Tree, blob_data, blob_parts, decode_commit, decode_tag, decode_tree, parse_tensor_header,
                      tensor_parts)

PEEK_BYTES = 4096
"""Enough of an object to hold any tensor header (its shape has at most MAX_NDIM sizes)."""
K = TypeVar("K")


def _corrupt(oid: ObjectId, moved: bool = False) -> CorruptObject:
    return CorruptObject(
        f"object {oid} is corrupt: its bytes no longer hash to its id" + (" (moved aside to .dithub/damaged/)" if moved else ""),
        "`dithub fsck --repair REMOTE` fetches it again; re-committing the adapter that holds it also restores it",
    )


def _missing(oid: ObjectId) -> ObjectNotFound:
    return ObjectNotFound(f"object {oid} is not in the store", "fetch it from a remote; run `dithub fsck` to see what is missing")


def _nbytes(parts: Sequence[Buffer]) -> int:
    return sum(len(memoryview(p).cast("B")) for p in parts)


@dataclass(frozen=True)
class TensorData:
    """A stored tensor: dtype, shape and a (zero-copy) view of its bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    @property
    def nbytes(self) -> int:
        return len(self.data)


class BaseObjectStore(ABC):
    """What every object store offers; subclasses provide the five primitives. ``hash`` names its
    objects (the repository's, from its config; see ``ids``)."""

    hash: Hash = LEGACY_HASH

    def file(self, oid: ObjectId) -> Path | None:
        """The file holding ``oid`` whole, where the store keeps one (None: in memory)."""
        return None

    def receive(self, oid: ObjectId, fill: Callable[[Path], None], size: int | None = None,
                check: Callable[[bytes, int], None] = lambda head, total: None) -> None:
        """Store ``oid`` from a file that ``fill(path)`` writes (a download straight to disk, no copy
        through memory), once it hashes to ``oid`` (CorruptObject otherwise) and ``check(first
        bytes, size)`` accepts it (raising otherwise); the store then adopts the file (``_adopt``).
        A stored copy of another ``size`` than expected is replaced."""
        if self._present(oid, size) if size else self.contains(oid):
            return
        fd, name = tempfile.mkstemp(prefix=f".{oid}.", dir=self._temp_dir())
        os.close(fd)
        tmp = Path(name)
        try:
            fill(tmp)
            hasher = self.hash.new(size or 0)
            with files.open_read(tmp) as f:
                while chunk := f.read(16 << 20):
                    hasher.update(chunk)
                if hasher.hexdigest() != oid:
                    raise _corrupt(oid)
                total = f.tell()
                f.seek(0)
                check(f.read(PEEK_BYTES), total)
                os.fsync(f.fileno())
            self._adopt(oid, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _temp_dir(self) -> Path | None:
        """Where ``receive`` downloads (None: the system's temporary folder)."""
        return None

    def _adopt(self, oid: ObjectId, path: Path) -> None:
        """Store the checked file ``path`` as ``oid`` (here: its bytes, read into memory)."""
        self._store(oid, [path.read_bytes()])

    def mtime(self, oid: ObjectId) -> float | None:
        """When ``oid`` was written (None where the store does not know: gc's grace does not apply)."""
        return None

    def temp_files(self, older_than: float = 0.0) -> list[Path]:
        """Leftovers of interrupted writes older than ``older_than`` s (none in memory)."""
        return []

    # -- primitives -------------------------------------------------------
    @abstractmethod
    def contains(self, oid: ObjectId) -> bool:
        """True if ``oid`` is stored (its bytes are not checked)."""

    @abstractmethod
    def _store(self, oid: ObjectId, parts: Sequence[Buffer]) -> None:
        """Store the concatenated parts under ``oid`` (already computed)."""

    @abstractmethod
    def _load(self, oid: ObjectId) -> memoryview:
        """The raw bytes of ``oid``, unverified; raise ObjectNotFound."""

    @abstractmethod
    def __iter__(self) -> Iterator[ObjectId]:
        """Every stored object id."""

    @abstractmethod
    def delete(self, oid: ObjectId) -> None:
        """Remove an object (used by gc only)."""

    def sync(self) -> None:  # noqa: B027  a hook: stores that write durably need not override it
        """Make every write so far durable (before a ref points at it)."""

    def _freshen(self, oid: ObjectId) -> None:  # noqa: B027  a hook: stores without gc grace periods need none
        """Mark an existing object as just written (gc's grace period counts from here)."""

    def _present(self, oid: ObjectId, size: int) -> bool:
        """Stored, and (where cheap to tell) of the right size: a write replaces a copy that is not."""
        return self.contains(oid)

    def set_aside(self, oid: ObjectId) -> bool:
        """Take a damaged object out of the store (kept for inspection where the store can), so that
        the next write of its bytes — a commit, a fetch, ``fsck --repair`` — restores it."""
        self.delete(oid)
        return True

    # -- writing -----------------------------------------------------------
    def put(self, parts: Sequence[Buffer]) -> tuple[ObjectId, bool]:
        """Store the concatenation of ``parts``; (id, whether it was new)."""
        oid = self.hash.of_parts(parts)
        if self._present(oid, _nbytes(parts)):
            self._freshen(oid)
            return oid, False
        self._store(oid, parts)
        return oid, True

    def put_many(self, items: Iterable[tuple[K, Sequence[Buffer]]], on_done: Callable[[K, ObjectId, bool], None],
                 workers: int = 3, window: int = 6) -> None:
        """Store many objects, hashing here and writing on ``workers`` threads (one object's fsync
        overlaps the next one's hashing); ``on_done(key, id, new)`` is called in order, on this
        thread, once each is stored; at most ``window`` objects are in flight."""
        pending: deque[tuple[K, ObjectId, Future[None] | None]] = deque()
        claimed: set[ObjectId] = set()

        def finish_one() -> None:
            key, oid, fut = pending.popleft()
            if fut is not None:
                fut.result()
            on_done(key, oid, fut is not None)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dithub-write") as pool:
            try:
                for key, parts in items:
                    oid = self.hash.of_parts(parts)
                    fut = None
                    if oid not in claimed and not self._present(oid, _nbytes(parts)):
                        fut = pool.submit(self._store, oid, parts)
                    elif oid not in claimed:
                        self._freshen(oid)
                    claimed.add(oid)
                    pending.append((key, oid, fut))
                    while len(pending) > window:
                        finish_one()
                while pending:
                    finish_one()
            finally:
                for _key, _oid, fut in pending:
                    if fut is not None:
                        fut.cancel()

    def write(self, data: Buffer) -> ObjectId:
        """Store bytes under their digest; a no-op if present."""
        return self.put([data])[0]

    def write_tensor(self, dtype: str, shape: Sequence[int], data: Buffer) -> ObjectId:
        """Store one tensor's raw little-endian bytes with its header."""
        return self.put(tensor_parts(dtype, shape, data))[0]

    def write_blob(self, data: Buffer) -> ObjectId:
        """Store a file's bytes as a blob."""
        return self.put(blob_parts(data))[0]

    def read_blob(self, oid: ObjectId) -> bytes:
        return bytes(blob_data(oid, self.read_buffer(oid)))

    def write_tree(self, tree: Tree) -> ObjectId:
        return self.write(tree.encode())

    def write_commit(self, commit: Commit) -> ObjectId:
        return self.write(commit.encode())

    # -- reading -----------------------------------------------------------
    def read_buffer(self, oid: ObjectId, *, set_aside: bool = True) -> memoryview:
        """The bytes of ``oid``, checked against the id. Damaged bytes raise CorruptObject and (unless
        ``set_aside`` is False: fsck's report) the object leaves the store, so a write restores it."""
        buf = self._load(oid)
        if self.hash.of(buf) != oid:
            raise _corrupt(oid, set_aside and self.set_aside(oid))
        return buf

    def read(self, oid: ObjectId) -> bytes:
        return bytes(self.read_buffer(oid))

    def read_tensor(self, oid: ObjectId) -> TensorData:
        buf = self.read_buffer(oid)
        dtype, shape, offset = parse_tensor_header(oid, buf)
        return TensorData(dtype, shape, buf[offset:])

    def iter_tensor_bytes(self, oid: ObjectId) -> Iterator[memoryview]:
        """A tensor's data bytes in chunks, for copying out; verified by the end (a mismatch raises
        CorruptObject after the last chunk: a writer streaming into a temp file publishes nothing)."""
        yield self.read_tensor(oid).data

    def read_tree(self, oid: ObjectId) -> Tree:
        return decode_tree(oid, self.read(oid))

    def read_commit(self, oid: ObjectId) -> Commit:
        return decode_commit(oid, self.read(oid))

    def read_tag(self, oid: ObjectId) -> Tag:
        return decode_tag(oid, self.read(oid))

    def peel(self, oid: ObjectId) -> ObjectId:
        """The commit ``oid`` names: itself, or the commit an annotated tag object points at."""
        if self.contains(oid) and self.peek(oid, len(b"tag\n")) == b"tag\n":
            return self.read_tag(oid).object
        return oid

    def size(self, oid: ObjectId) -> int:
        return len(self._load(oid))

    def peek(self, oid: ObjectId, n: int) -> bytes:
        """The first ``n`` bytes of ``oid``, unverified (its kind and header, without reading it all)."""
        return bytes(self._load(oid)[:n])


class MemoryObjectStore(BaseObjectStore):
    """Objects in a dict; for tests and scratch work."""

    def __init__(self, hash: Hash = LEGACY_HASH) -> None:
        self._objects: dict[ObjectId, bytes] = {}
        self.hash = hash

    def contains(self, oid: ObjectId) -> bool:
        return oid in self._objects

    def _store(self, oid: ObjectId, parts: Sequence[Buffer]) -> None:
        self._objects[oid] = b"".join(bytes(p) for p in parts)

    def _load(self, oid: ObjectId) -> memoryview:
        try:
            # a private, writable copy: callers may wrap it in a tensor
            return memoryview(bytearray(self._objects[oid]))
        except KeyError:
            raise _missing(oid) from None

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(list(self._objects))

    def delete(self, oid: ObjectId) -> None:
        self._objects.pop(oid, None)


class DiskObjectStore(BaseObjectStore):
    """Loose objects at ``objects/ab/cdef…``; temp files under ``tmp/``."""

    def __init__(self, objects_dir: Path, tmp_dir: Path, hash: Hash = LEGACY_HASH) -> None:
        self.hash = hash
        self.root = Path(objects_dir)
        self.tmp_dir = Path(tmp_dir)
        self._dirty: set[Path] = set()

    def path(self, oid: ObjectId) -> Path:
        return self.root / oid[:2] / oid[2:]

    def file(self, oid: ObjectId) -> Path | None:
        return self.path(oid)

    def contains(self, oid: ObjectId) -> bool:
        return self.path(oid).is_file()

    def _store(self, oid: ObjectId, parts: Sequence[Buffer]) -> None:
        final = self.path(oid)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_parts(final, parts, tmp_dir=self.tmp_dir, durable_dir=False, mode=0o444)
        self._dirty.add(final.parent)

    def size(self, oid: ObjectId) -> int:
        try:
            return self.path(oid).stat().st_size
        except FileNotFoundError:
            raise _missing(oid) from None

    def _open(self, oid: ObjectId) -> io.BufferedReader:
        """The object's file, open for reading (ObjectNotFound; a fault of the machine: StorageError)."""
        try:
            with files.faults(self.path(oid), "read"):
                return files.open_read(self.path(oid))
        except FileNotFoundError:
            raise _missing(oid) from None

    def peek(self, oid: ObjectId, n: int) -> bytes:
        with files.faults(self.path(oid), "read"), self._open(oid) as f:
            return f.read(n)

    def _temp_dir(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir

    def _adopt(self, oid: ObjectId, path: Path) -> None:
        """Rename the checked download into place (read-only, as every object)."""
        os.chmod(path, 0o444)
        final = self.path(oid)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
        self._dirty.add(final.parent)

    def sync(self) -> None:
        for directory in sorted(self._dirty):
            fsync_dir(directory)
        if self._dirty:
            fsync_dir(self.root)
        self._dirty.clear()

    def _present(self, oid: ObjectId, size: int) -> bool:
        try:
            return self.path(oid).stat().st_size == size
        except FileNotFoundError:
            return False

    def set_aside(self, oid: ObjectId) -> bool:
        """Move a damaged object to ``damaged/`` beside ``objects/`` (False if that failed: a
        read-only store keeps it, and reports it again)."""
        try:
            target = self.root.parent / "damaged" / oid
            target.parent.mkdir(exist_ok=True)
            os.replace(self.path(oid), target)
            return True
        except OSError:
            return False

    def _load(self, oid: ObjectId) -> memoryview:
        with files.faults(self.path(oid), "read"), self._open(oid) as f:
            size = os.fstat(f.fileno()).st_size  # mapped ACCESS_COPY: writable for torch.frombuffer, never written back
            return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)) if size else memoryview(b"")

    def __iter__(self) -> Iterator[ObjectId]:
        return (oid for f in sorted(self.root.glob("??/*")) if self.hash.names(oid := f.parent.name + f.name))

    def delete(self, oid: ObjectId) -> None:
        self.path(oid).unlink(missing_ok=True)

    def iter_object_bytes(self, oid: ObjectId, chunk: int = 16 << 20) -> Iterator[memoryview]:
        """An object's whole bytes in chunks read into one reused buffer (each valid until the next
        is asked for), verified by the end: a mismatch raises CorruptObject after the last chunk,
        so a streaming copy never publishes damaged bytes."""
        with self._open(oid) as f:
            total = os.fstat(f.fileno()).st_size
            buf = memoryview(bytearray(min(chunk, total) or 1))
            hasher = self.hash.new(total)
            while n := f.readinto(buf):
                hasher.update(buf[:n])
                yield buf[:n]
        if hasher.hexdigest() != oid:
            raise _corrupt(oid, self.set_aside(oid))

    def iter_tensor_bytes(self, oid: ObjectId, chunk: int = 16 << 20) -> Iterator[memoryview]:
        """A tensor's data bytes in chunks (see ``iter_object_bytes``)."""
        offset = None
        total = self.size(oid)
        for view in self.iter_object_bytes(oid, chunk):
            if offset is None:
                _dtype, _shape, offset = parse_tensor_header(oid, view, total)
                view = view[offset:]
            if len(view):
                yield view

    def _freshen(self, oid: ObjectId) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.path(oid))

    def mtime(self, oid: ObjectId) -> float:
        return self.path(oid).stat().st_mtime

    def temp_files(self, older_than: float = 0.0) -> list[Path]:
        if not self.tmp_dir.is_dir():
            return []
        now = time.time()
        return [p for p in self.tmp_dir.iterdir() if now - p.stat().st_mtime >= older_than]
