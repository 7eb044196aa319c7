"""Atomic file writes: temp file, fsync, rename; never a half-written file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from . import files

_CHUNK = 64 << 20
_WRITEBACK_WINDOW = 64 << 20


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range back now (POSIX_FADV_DONTNEED, without waiting), so the final fsync
    has less to wait for; clean pages of the range leave the page cache."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:  # appends at the file position
    """os.write until every byte of ``data`` is written."""
    view = memoryview(data).cast("B")
    pos = 0
    while pos < len(view):
        pos += files.write(fd, view[pos : pos + _CHUNK])


@contextmanager
def atomic_file(path: Path, *, tmp_dir: Path | None = None, durable_dir: bool = True, mode: int = 0o644) -> Iterator[int]:
    """A file descriptor to fill; on success it is fsynced and renamed to ``path``. The temp file
    lives in ``tmp_dir`` (same filesystem as ``path``); on any failure (or a kill) ``path`` is
    untouched and the temp file is removed."""
    path = Path(path)
    with files.faults(path, "write"):  # a full disk, a read-only file system…: StorageError naming the file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", dir=tmp_dir or path.parent)
        try:
            yield fd
            os.fsync(fd)
            os.fchmod(fd, mode)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        if durable_dir:
            fsync_dir(path.parent)


def pwrite_chunks(fd: int, chunks: Iterable[bytes | bytearray | memoryview], offset: int) -> int:
    """Write ``chunks`` at ``offset`` on, starting writeback as it goes and at the end; bytes written."""
    pos = flushed = offset
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        done = 0
        while done < len(view):
            done += files.pwrite(fd, view[done : done + _CHUNK], pos + done)
        pos += len(view)
        if pos - flushed >= _WRITEBACK_WINDOW:
            _start_writeback(fd, flushed, pos - flushed)
            flushed = pos
    if pos > flushed:
        _start_writeback(fd, flushed, pos - flushed)
    return pos - offset


def atomic_write_parts(path: Path, parts: Iterable[bytes | bytearray | memoryview], *, tmp_dir: Path | None = None,
                       durable_dir: bool = True, mode: int = 0o644) -> None:
    """Write the concatenation of ``parts`` to ``path`` atomically (see ``atomic_file``)."""
    with atomic_file(path, tmp_dir=tmp_dir, durable_dir=durable_dir, mode=mode) as fd:
        pwrite_chunks(fd, parts, 0)


def atomic_write(path: Path, data: bytes | memoryview, durable_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write_parts``)."""
    atomic_write_parts(path, [data], durable_dir=durable_dir)
