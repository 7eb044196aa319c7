"""Atomic file writes: temp file, fsync, rename; never a half-written file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 64 << 20


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte of ``data`` is written."""
    view = memoryview(data).cast("B")
    pos = 0
    while pos < len(view):
        pos += os.write(fd, view[pos : pos + _CHUNK])


def atomic_write_parts(
    path: Path,
    parts: Iterable[bytes | memoryview],
    *,
    tmp_dir: Path | None = None,
    durable_dir: bool = True,
    mode: int = 0o644,
) -> None:
    """Write the concatenation of ``parts`` to ``path`` atomically.

    The bytes go to a temp file (in ``tmp_dir``, same filesystem), are fsynced
    and renamed over ``path``; on any failure (or kill) ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", dir=tmp_dir or path.parent)
    try:
        for part in parts:
            write_all(fd, part)
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


def atomic_write(path: Path, data: bytes | memoryview, durable_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write_parts``)."""
    atomic_write_parts(path, [data], durable_dir=durable_dir)
