"""Refs: named pointers to commits, moved only by compare-and-swap.

``HEAD`` is symbolic (``ref: refs/heads/main``) or a commit id. Branches live under ``refs/heads/``
(names may contain ``/``), tags under ``refs/tags/``, named base checkpoints under ``refs/bases/``.
Every update appends to the ref's reflog inside the same locked section (after dulwich's
``set_if_equals``)."""
from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, CorruptObject, RefConflict
from . import files
from .atomic import fsync_dir, write_all
from .ids import ObjectId, is_object_id

SYMREF_PREFIX = "ref: "
STALE_LOCK_SECONDS = 2.0
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class ReflogEntry:
    """One move of a ref."""

    old: ObjectId | None
    new: ObjectId | None
    author: str
    time: float
    message: str

    def to_json(self) -> dict[str, object]:
        return {"old": self.old, "new": self.new, "author": self.author, "time": self.time, "message": self.message}


MAX_NAME_BYTES = 1024
"""The longest full ref name (``refs/heads/…``), in UTF-8 bytes."""
MAX_COMPONENT_BYTES = 255
"""The longest part between slashes (a file name on every common file system)."""
MAX_REF_BYTES = 4096
"""A ref file holds one id or ``ref: NAME``: anything longer is not read."""
SPECIAL = ("HEAD", "ORIG_HEAD")
HEADS, TAGS, BASES, REMOTES = "refs/heads/", "refs/tags/", "refs/bases/", "refs/remotes/"
"""The ref namespaces: branches, tags, named bases, remote-tracking branches."""
NAMESPACES = (HEADS, TAGS, BASES, REMOTES)


def ref_name_problem(name: str) -> str | None:
    """Why git would refuse ``name`` (``..``, spaces, ``~^:?*[\\``, ``.lock``, over-long…), or None."""
    if not name:
        return "it is empty"
    if _BAD_CHARS.search(name):
        return "it contains a space, a control character or one of ~^:?*[\\"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name or name == "@":
        return "it contains '@{'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it starts or ends with '/' or contains '//'"
    if name.endswith("."):
        return "it ends with '.'"
    parts = name.split("/")
    if any(part.startswith(".") or part.endswith(".lock") for part in parts):
        return "a component starts with '.' or ends with '.lock'"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        return f"a component is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def full_ref_problem(name: str, namespaces: tuple[str, ...] = NAMESPACES) -> str | None:
    """Why ``name`` is not a usable full ref (``HEAD``, or one of ``namespaces`` + a valid name), or None."""
    if name in SPECIAL:
        return None
    space = next((ns for ns in namespaces if name.startswith(ns)), None)
    if space is None:
        return f"it is not under {', '.join(namespaces)}"
    return ref_name_problem(name[len(space):]) or ref_name_problem(name)


def check_ref_name(name: str, what: str = "ref") -> None:
    """Reject names git would reject (``..``, spaces, ``~^:?*[\\``, ``.lock``, over-long…): BadInput."""
    problem = ref_name_problem(name)
    if problem:
        raise BadInput(f"invalid {what} name {name!r}: {problem}", "use letters, digits, '-', '_', '.' and '/' (e.g. class/dog)")


def check_full_ref(name: str) -> None:
    """BadInput unless ``name`` is ``HEAD`` or a valid name under a known namespace."""
    problem = full_ref_problem(name)
    if problem:
        raise BadInput(f"invalid ref {name!r}: {problem}", "use letters, digits, '-', '_', '.' and '/' (e.g. class/dog)")


class BaseRefStore(ABC):
    """Ref storage. A backend provides raw reads, a lock primitive (``_locked``), the write done
    under it (``_write``) and reflogs; the compare-and-swap over them is this class's, the one in dithub."""

    @abstractmethod
    def read_raw(self, name: str) -> str | None:
        """The stored value of ``name`` (an id or ``ref: …``), or None."""

    @abstractmethod
    def _locked(self, name: str) -> AbstractContextManager[Any]:
        """Exclusive right to change ``name`` while the context lasts (RefConflict when another
        writer holds it); what it yields is handed to ``_write``."""

    @abstractmethod
    def _write(self, name: str, new: str | None, entry: ReflogEntry | None, held: Any) -> None:
        """Store ``new`` for ``name`` (None: remove it) and log ``entry``, under the lock ``held``."""

    def _moved(self, name: str, old: str | None, current: str | None) -> RefConflict:
        """The conflict when ``name`` no longer holds ``old``."""
        return RefConflict(f"{name} moved: expected {old or 'nothing'}, found {current or 'nothing'}",
                           "another process updated it; re-read and retry")

    def compare_and_swap(self, name: str, old: str | None, new: str | None, entry: ReflogEntry | None = None) -> None:
        """Replace ``old`` (``"*"``: whatever is there) by ``new`` (None: remove) at exactly ``name``
        (no symbolic ref followed), logging ``entry``: under the lock, re-read, compare, write."""
        with self._locked(name) as held:
            current = self.read_raw(name)
            if old != "*" and current != old:
                raise self._moved(name, old, current)
            self._write(name, new, entry, held)

    @abstractmethod
    def names(self, prefix: str = "refs/") -> list[str]:
        """Every ref name under ``prefix`` (HEAD excluded), sorted."""

    @abstractmethod
    def reflog(self, name: str) -> list[ReflogEntry]:
        """Moves of ``name``, oldest first."""

    def locks(self) -> list[Path]:
        """Lock files present now (held or stale); none where locks are not files."""
        return []

    # -- derived ----------------------------------------------------------
    def follow(self, name: str) -> str:
        """The ref ``name`` finally stands for, following symbolic refs."""
        for _ in range(5):
            raw = self.read_raw(name)
            if raw is None or not raw.startswith(SYMREF_PREFIX):
                return name
            name = raw[len(SYMREF_PREFIX) :]
        raise CorruptObject(f"symbolic ref loop at {name}")

    def resolve(self, name: str) -> ObjectId | None:
        """The commit id ``name`` points to (through symbolic refs), or None."""
        raw = self.read_raw(self.follow(name))
        return raw if raw and is_object_id(raw) else None

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str, author: str = "dithub") -> None:
        """Point ``name`` (through HEAD's symbolic ref) at ``new`` if it is still at ``old``
        (RefConflict when the ref moved or another writer holds its lock)."""
        self.compare_and_swap(self.follow(name), old, new, ReflogEntry(old, new, author, time.time(), message))

    def delete(self, name: str, old: ObjectId | None) -> None:
        """Remove ``name`` (and its reflog) if it still points to ``old``."""
        self.compare_and_swap(name, old, None)

    def set_symbolic(self, name: str, target: str) -> None:
        """Make ``name`` (HEAD) a symbolic ref to ``target`` (not logged: the target's log records its moves)."""
        self.compare_and_swap(name, "*", SYMREF_PREFIX + target)

    def set_detached(self, name: str, oid: ObjectId, message: str = "", author: str = "dithub") -> None:
        """Point ``name`` (HEAD) directly at a commit."""
        self.compare_and_swap(name, "*", oid, ReflogEntry(None, oid, author, time.time(), message))

    def as_dict(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        return {n: oid for n in self.names(prefix) if (oid := self.resolve(n))}


class MemoryRefStore(BaseRefStore):
    """Refs in a dict, guarded by a thread lock."""

    def __init__(self) -> None:
        self._refs: dict[str, str] = {}
        self._logs: dict[str, list[ReflogEntry]] = {}
        self._lock = threading.Lock()

    def read_raw(self, name: str) -> str | None:
        return self._refs.get(name)

    def _locked(self, name: str) -> AbstractContextManager[Any]:
        return self._lock

    def _write(self, name: str, new: str | None, entry: ReflogEntry | None, held: Any) -> None:
        if new is None:
            self._refs.pop(name, None)
            self._logs.pop(name, None)
            return
        self._refs[name] = new
        if entry is not None:
            self._logs.setdefault(name, []).append(entry)

    def names(self, prefix: str = "refs/") -> list[str]:
        return sorted(n for n in self._refs if n.startswith(prefix))

    def reflog(self, name: str) -> list[ReflogEntry]:
        return list(self._logs.get(self.follow(name), []))


@dataclass
class _DiskLock:
    """A held ref lock: its descriptor and file, and whether the write renamed it over the ref."""

    fd: int
    path: Path
    renamed: bool = False


class DiskRefStore(BaseRefStore):
    """Refs as files under the repository directory, reflogs under ``logs/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        """The file of ref ``name``; BadInput for a name that is no valid ref or whose path would leave
        the repository's refs (defence in depth: names are checked where they enter, too)."""
        check_full_ref(name)
        path = self.root / name
        inside = self.root if name in SPECIAL else self.root / "refs"
        if os.path.commonpath([os.path.normpath(path), os.path.normpath(inside)]) != os.path.normpath(inside):
            raise BadInput(f"invalid ref {name!r}: its path leaves {inside}")
        return path

    def _log_path(self, name: str) -> Path:
        check_full_ref(name)
        return self.root / "logs" / name

    def read_raw(self, name: str) -> str | None:
        if full_ref_problem(name):
            return None  # no such ref can exist: nothing is read
        try:
            with open(self._path(name), "rb") as f:
                data = f.read(MAX_REF_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if len(data) > MAX_REF_BYTES:
            raise CorruptObject(f"ref {name} is not a ref: its file is over {MAX_REF_BYTES} bytes",
                                f"delete {self._path(name)} or point it at a commit (dithub branch -f)")
        value = data.decode(errors="replace").strip()
        return value or None

    def names(self, prefix: str = "refs/") -> list[str]:
        names = (os.path.relpath(os.path.join(folder, f), self.root).replace(os.sep, "/")
                 for folder, _dirs, found in os.walk(self.root / "refs") for f in found if not (f.endswith(".lock") or f.startswith(".")))
        return sorted(n for n in names if n.startswith(prefix))

    def reflog(self, name: str) -> list[ReflogEntry]:
        path = self._log_path(self.follow(name))
        entries = []
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                d = json.loads(line)
                entries.append(ReflogEntry(d["old"], d["new"], d["author"], d["time"], d["message"]))
            except (ValueError, KeyError):
                continue  # a torn last line after a crash: skip it
        return entries

    # -- locking ----------------------------------------------------------
    def compare_and_swap(self, name: str, old: str | None, new: str | None, entry: ReflogEntry | None = None) -> None:
        with files.faults(self._path(name), "update ref"):
            super().compare_and_swap(name, old, new, entry)

    @contextmanager
    def _locked(self, name: str) -> Iterator[_DiskLock]:
        """``<ref>.lock`` created with O_EXCL and held with flock; removed on the way out unless the
        write renamed it over the ref."""
        held = _DiskLock(*self._acquire(name))
        try:
            yield held
        finally:
            os.close(held.fd)
            if not held.renamed:
                held.path.unlink(missing_ok=True)

    def _acquire(self, name: str) -> tuple[int, Path]:
        path = self._path(name)
        lock = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BadInput(f"cannot create {name}: a ref named like one of its folders exists",
                           "pick a name that is not a prefix of an existing branch") from None
        if path.is_dir():
            raise BadInput(f"cannot create {name}: refs exist below it ({name}/…)", "pick another name")
        for _attempt in range(2):
            try:
                fd = files.open_fd(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._break_stale(lock):
                    continue
                raise RefConflict(f"{name} is locked by another dithub process ({lock})",
                                  "retry; if no dithub process is running, delete the .lock file") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd, lock
        raise RefConflict(f"{name} is locked by another dithub process ({lock})", "retry")

    @staticmethod
    def _break_stale(lock: Path) -> bool:
        """Remove a lock left by a killed process (no flock holder, not fresh)."""
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a live process holds it
            st = os.fstat(fd)
            if os.stat(lock).st_ino == st.st_ino and time.time() - st.st_mtime >= STALE_LOCK_SECONDS:
                os.unlink(lock)
                return True
            return False
        except BlockingIOError:
            return False
        except FileNotFoundError:  # removed meanwhile by its holder
            return True
        finally:
            os.close(fd)

    def _write(self, name: str, new: str | None, entry: ReflogEntry | None, held: _DiskLock) -> None:
        """The new value into the lock file (fsynced), the reflog entry, then the lock renamed over the ref."""
        if new is None:
            self._path(name).unlink(missing_ok=True)
            self._log_path(name).unlink(missing_ok=True)
            self._prune_empty(self._path(name).parent, self.root / "refs")
            self._prune_empty(self._log_path(name).parent, self.root / "logs")
            return
        write_all(held.fd, (new + "\n").encode())
        os.fsync(held.fd)
        if entry is not None:
            self._append_log(name, entry)
        os.replace(held.path, self._path(name))
        held.renamed = True
        fsync_dir(self._path(name).parent)

    def _append_log(self, name: str, entry: ReflogEntry) -> None:
        path = self._log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry.to_json(), sort_keys=True) + "\n").encode()
        fd = files.open_fd(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a line torn by a crash
            write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _prune_empty(directory: Path, stop: Path) -> None:
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def locks(self) -> list[Path]:
        """Lock files present now (held or stale)."""
        return sorted(self.root.glob("refs/**/*.lock")) + sorted(self.root.glob("*.lock"))
