"""The one place dithub's stores touch files: opening, writing, renaming.

Faults of the machine — disk full (ENOSPC, EDQUOT), read-only file system (EROFS), permission
denied (EACCES, EPERM), file too large (EFBIG) — become ``StorageError`` naming the path and what
to do, instead of an internal error. Tests inject such faults by replacing these functions.
"""
from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StorageError

_WHY = {
    errno.ENOSPC: ("the disk is full", "free some space and run the command again"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space and run the command again"),
    errno.EROFS: ("the file system is read-only", "work on a writable copy, or remount it read-write"),
    errno.EACCES: ("permission denied", "check the owner and permissions of the path"),
    errno.EPERM: ("operation not permitted", "check the owner and permissions of the path"),
    errno.EFBIG: ("the file is too large for this system or for the size limit (ulimit -f)", "raise the limit, or write elsewhere"),
}


def storage_error(exc: OSError, path: str | os.PathLike[str] | None, doing: str) -> StorageError | None:
    """The StorageError an OSError stands for, or None when it is not a fault of the machine."""
    if exc.errno not in _WHY:
        return None
    why, hint = _WHY[exc.errno]
    where = path if path is not None else exc.filename
    return StorageError(f"cannot {doing} {where}: {why}" if where else f"cannot {doing}: {why}", hint)


@contextmanager
def faults(path: str | os.PathLike[str] | None, doing: str) -> Iterator[None]:
    """Turn a fault of the machine inside the block into a StorageError about ``path``."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, path, doing)
        if err is None:
            raise
        raise err from None


def open_read(path: Path) -> io.BufferedReader:
    """A file opened for reading (raises OSError: callers decide what a missing file means)."""
    return open(path, "rb")


def open_fd(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """``os.open``."""
    return os.open(path, flags, mode)


def pwrite(fd: int, data: memoryview, offset: int) -> int:
    """``os.pwrite``: bytes written."""
    return os.pwrite(fd, data, offset)


def write(fd: int, data: memoryview) -> int:
    """``os.write`` at the file position: bytes written."""
    return os.write(fd, data)


def receive_file(copy: Callable[[str], None], dest: Path) -> None:
    """Fill local file ``dest`` with ``copy(path)``: a download that a remote's client library
    writes (fsspec: sendfile locally, concurrent ranged reads from S3)."""
    copy(str(dest))


LOCAL_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Faults a download can only meet on the machine it writes to (a read never fills a disk)."""
