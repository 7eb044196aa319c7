"""A remote repository on any fsspec filesystem: a local path, file://, memory://, s3://.

Layout under the URL (a bare repository, or the ``.dithub`` of a working one): ``objects/ab/cdef…`` (the same bytes as loose objects:
large tensors), ``packs/<id>.pack`` + ``packs/<id>.idx`` (small objects, many per file: see
``packs.py``) and ``refs/heads/…``, ``refs/tags/…``, ``refs/bases/…`` (one commit id per file).
Every object read is re-hashed before it is returned; a ref changes under a lock object created exclusively (an
O_EXCL create on a filesystem, a conditional ``If-None-Match: *`` put on S3), so two pushers never
both move it.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import BadInput, DithubError, RefConflict, RemoteError
from ..store import LEGACY_HASH, Hash, ObjectId, atomic_write, files, hash_named, is_object_id
from ..store.refs import BASES, HEADS, MAX_REF_BYTES, REMOTES, TAGS, BaseRefStore, ReflogEntry, full_ref_problem
from ..store.objects import MAX_JSON_BYTES
from .packs import PACK_BYTES, Pack, build_packs, decode_index

STALE_LOCK_SECONDS = 60.0
WORKING = ".dithub"
"""Where a working repository keeps its objects and refs."""
REMOTE_NAMESPACES = (HEADS, TAGS, BASES)
"""The refs a remote holds (a bare repository: no remote-tracking refs)."""
WORKERS = 8
MAX_PACK_BYTES = PACK_BYTES + MAX_JSON_BYTES
"""No push writes a larger pack (small objects fill up to PACK_BYTES; a larger tree gets one of its own)."""
MAX_INDEX_BYTES = 128 << 20
PACK_CACHE_BYTES = 256 << 20
"""Packs read whole are kept in memory up to this many bytes (a walk reads one generation of
commits at a time; their parents are usually in the same pack)."""


def _reporting(advance: Callable[[int], None], size: int) -> Any:
    """An fsspec callback reporting to ``advance`` the bytes of a transfer as it streams (s3fs calls
    it per chunk); its ``finish()`` reports what a backend did not (a local copy): the total is right."""
    from fsspec.callbacks import Callback

    class Reporting(Callback):  # type: ignore[misc]  # fsspec is untyped
        done, lock = 0, threading.Lock()

        def call(self, *args: Any, **kwargs: Any) -> None:
            self.report(int(self.value) - self.done)

        def report(self, n: int) -> None:
            with self.lock:
                n = max(0, min(n, size - self.done))
                self.done += n
            if n:
                advance(n)

        def finish(self) -> None:
            self.report(size - self.done)

    return Reporting()


class _Counted:
    """An fsspec filesystem whose storage calls are counted (the calls this module makes; fsspec's
    calls among its own methods are not counted again)."""

    CALLS = frozenset({"cat", "cat_file", "exists", "find", "get_file", "ls", "makedirs", "mv", "open", "pipe_file", "put_file",
                       "rm_file"})

    def __init__(self, fs: Any) -> None:
        self._fs, self.requests, self._lock = fs, 0, threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if name not in self.CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.requests += 1
            return attr(*args, **kwargs)

        return call


class Location:
    """One remote: object and ref access on its filesystem."""

    def __init__(self, url: str, name: str = "remote", options: Mapping[str, Any] | None = None,
                 cache: Path | None = None) -> None:
        """``cache``: a local folder for the remote's pack indexes (they never change once written)."""
        import fsspec

        self.url, self.name = url, name
        scheme, sep, rest = url.partition("://")
        if (not sep and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:(?!\\)", url)) or (sep and not rest.strip("/")):
            raise RemoteError(f"remote {name}: malformed URL {url!r}",
                              "use a path, file:///abs/path, memory://name or s3://bucket/prefix")
        options = dict(options or {})
        if scheme == "s3" and "config_kwargs" not in options:  # an unreachable endpoint fails in seconds, not minutes
            options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}
        # no listings cache and no shared instance: other processes write to the same remote, and a
        # cached folder listing would hide their objects (s3fs then reports them missing)
        settings = {"use_listings_cache": False, "skip_instance_cache": True, **options}
        try:
            fs, self.root = fsspec.core.url_to_fs(url, **settings)
        except (ImportError, ValueError) as exc:
            hint = "pip install s3fs" if url.startswith("s3://") else "use a path, file://, memory:// or s3:// URL"
            raise RemoteError(f"remote {name} ({url}) cannot be opened: {exc}", hint) from None
        self.fs: Any = _Counted(fs)
        """The filesystem; ``fs.requests`` counts the storage calls made (reads, writes, listings, deletes)."""
        self.root = self.root.rstrip("/")
        self._local = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol or ()))
        self.working = self._local and not fs.exists(f"{self.root}/refs") and fs.isdir(f"{self.root}/{WORKING}/refs")
        """A working repository (a directory holding ``.dithub/``, as git clones a non-bare one): read
        from its ``.dithub``, which has a remote's layout; its remote-tracking refs are not listed."""
        if self.working:
            self.root = f"{self.root}/{WORKING}"
        self._made: set[str] = set()
        self._cache = cache
        self.ref_store = RemoteRefs(self)
        """The refs here as a ref store (compare-and-swap under a lock object)."""
        self._where: dict[ObjectId, tuple[str, int, int]] | None = None  # packed object -> (pack, offset, length)
        self._indexed: set[str] = set()
        self._packs: OrderedDict[str, bytes] = OrderedDict()
        self._pack_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.skipped: list[tuple[str, str]] = []
        """Refs the last ``refs()`` left out: (name as listed, why)."""
        self._hash: Hash | None = None

    # -- the object hash ---------------------------------------------------------
    @property
    def hash(self) -> Hash:
        """How this remote names its objects: as its ``config.json`` says (a working repository's
        config; a bare remote's, written by the first push), ``xxh3`` where there is none (remotes
        made before issue 26)."""
        if self._hash is None:
            self._hash = self._stored_hash() or LEGACY_HASH
        return self._hash

    def _stored_hash(self) -> Hash | None:
        """The hash the remote's config names (None: it has no config), read within bounds."""
        try:
            raw = self.fs.cat_file(f"{self.root}/{CONFIG}", start=0, end=MAX_CONFIG_BYTES)  # a hostile one is not read whole
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail("reading its config", exc) from None
        try:
            config = json.loads(raw)
            return hash_named(str(config.get("hash", LEGACY_HASH.name)) if isinstance(config, dict) else "")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteError(f"remote {self.name} ({self.url}): its {CONFIG} is unreadable or names no known hash: {exc}",
                              "the remote was written by a newer dithub, or its config is damaged") from None

    def claim_hash(self, hash: Hash) -> None:
        """Record ``hash`` as this remote's, where it records none and holds nothing yet (a first
        push); RemoteError where it names objects by another hash."""
        if self._hash is None:
            stored = self._stored_hash()
            if stored is None and not (self.refs() or self.object_sizes()):  # with objects: an old remote, xxh3's
                self._put(f"{self.root}/{CONFIG}", json.dumps({"format": 1, "hash": hash.name}).encode(), "its config")
                stored = hash
            self._hash = stored or LEGACY_HASH
        check_same_hash(self, hash)

    # -- paths -----------------------------------------------------------------
    def _object(self, oid: ObjectId) -> str:
        return f"{self.root}/objects/{oid[:2]}/{oid[2:]}"

    def _pack(self, pack_id: str, suffix: str = ".pack") -> str:
        return f"{self.root}/packs/{pack_id}{suffix}"

    def _ref(self, name: str) -> str:
        problem = full_ref_problem(name, REMOTE_NAMESPACES)
        if problem:  # names are checked where they enter; this guards the path itself
            raise BadInput(f"invalid ref {name!r} for remote {self.name}: {problem}")
        return f"{self.root}/{name}"

    def _fail(self, what: str, exc: Exception) -> DithubError:
        """The error for a failed storage call: a StorageError where the remote's storage refused
        (full, read-only, permission denied, as a file system says it), a RemoteError otherwise."""
        if isinstance(exc, OSError) and (classified := files.storage_error(exc, None, f"finish {what} on remote {self.name} ({self.url})")):
            return classified
        return RemoteError(f"remote {self.name} ({self.url}): {what}: {exc}", "check the URL, the credentials and the network")

    # -- objects ---------------------------------------------------------------
    def object_ids(self) -> set[ObjectId]:
        """Every object id the remote holds (one listing, not one request per object)."""
        return set(self.object_sizes())

    def object_sizes(self) -> dict[ObjectId, int]:
        """Every object the remote holds and its size in bytes: one listing of the loose objects,
        and the pack indexes."""
        try:
            self.fs.invalidate_cache(f"{self.root}/objects")  # fsspec instances are shared: never a stale listing
            found = self.fs.find(f"{self.root}/objects", detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as exc:  # noqa: BLE001  fsspec backends raise their own errors
            raise self._fail("listing objects", exc) from None
        sizes = {oid: length for oid, (_pack, _offset, length) in self.packed().items()}
        for path, info in found.items():  # objects/ab/cdef…
            if is_object_id(oid := "".join(path.rstrip("/").split("/")[-2:])):
                sizes[oid] = int(info.get("size") or 0)
        return sizes

    # -- packs -----------------------------------------------------------------
    def packed(self, refresh: bool = True) -> dict[ObjectId, tuple[str, int, int]]:
        """Every object in an indexed pack -> (pack id, offset, length): one listing, then only the
        indexes not read before (from the local cache, or the remote)."""
        with self._guard:
            if self._where is not None and not refresh:
                return self._where
            try:
                self.fs.invalidate_cache(f"{self.root}/packs")
                listing = self.fs.ls(f"{self.root}/packs", detail=True)
                sizes = {str(e["name"]).rpartition("/")[2]: int(e.get("size") or 0) for e in listing}
            except FileNotFoundError:
                sizes = {}
            except Exception as exc:  # noqa: BLE001
                raise self._fail("listing packs", exc) from None
            new = [n[:-4] for n in sizes if n.endswith(".idx") and is_object_id(n[:-4]) and n[:-4] not in self._indexed]
            for name in new:  # bounded reads: an index or pack larger than any push writes is not read
                if sizes[name + ".idx"] > MAX_INDEX_BYTES or sizes.get(name + ".pack", 0) > MAX_PACK_BYTES:
                    raise RemoteError(f"remote {self.name} ({self.url}): pack {name} or its index is larger than any push writes",
                                      "repair the remote: push again from a complete clone")
            where = dict(self._where or {})
            with ThreadPoolExecutor(WORKERS) as pool:
                for pack_id, index in zip(new, pool.map(self._read_index, new)):
                    for oid, (offset, length) in index.items():
                        where.setdefault(oid, (pack_id, offset, length))
            self._indexed.update(new)
            self._where = where
            return where

    def _read_index(self, pack_id: str) -> dict[ObjectId, tuple[int, int]]:
        cached = self._cache / f"{pack_id}.idx" if self._cache else None
        if cached is not None and cached.is_file():
            try:
                return decode_index(pack_id, cached.read_bytes(), "cached index")
            except RemoteError:
                pass  # read it again from the remote
        try:
            data = self.fs.cat_file(self._pack(pack_id, ".idx"))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"reading the index of pack {pack_id}", exc) from None
        index = decode_index(pack_id, data, f"remote {self.name} ({self.url})")
        if cached is not None:
            with suppress(OSError):  # a cache: the remote still has it
                atomic_write(cached, data, durable_dir=False)
        return index

    def pack_bytes(self, pack_id: str) -> bytes:
        """The whole pack, read once per Location and kept while the cache has room."""
        with self._guard:
            lock = self._pack_locks.setdefault(pack_id, threading.Lock())
        with lock:
            with self._guard:
                if pack_id in self._packs:
                    self._packs.move_to_end(pack_id)
                    return self._packs[pack_id]
            try:
                data: bytes = self.fs.cat_file(self._pack(pack_id))
            except Exception as exc:  # noqa: BLE001
                raise self._fail(f"reading pack {pack_id}", exc) from None
            with self._guard:
                self._packs[pack_id] = data
                while sum(map(len, self._packs.values())) > PACK_CACHE_BYTES and len(self._packs) > 1:
                    self._packs.popitem(last=False)
            return data

    def locate(self, oid: ObjectId) -> tuple[str, int | None, int | None]:
        """(file, start, end) that holds ``oid`` on the remote (start and end None: the whole file)."""
        found = self.packed(refresh=False).get(oid)
        if found is None:
            return self._object(oid), None, None
        pack_id, offset, length = found
        return self._pack(pack_id), offset, offset + length

    def write_packs(self, objects: Iterable[tuple[ObjectId, bytes | memoryview]],
                    advance: Callable[[int], None] = lambda n: None) -> list[Pack]:
        """Upload ``objects`` in packs: each pack, then its index (which makes it count)."""
        packs = build_packs(objects, self.hash)

        def one(pack: Pack) -> None:
            self._put(self._pack(pack.id), pack.data, f"pack {pack.id}")
            self._put(self._pack(pack.id, ".idx"), pack.index_bytes(), f"the index of pack {pack.id}")
            advance(len(pack.data))

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, packs))
        return packs

    def read_object(self, oid: ObjectId, missing_ok: bool = False) -> bytes:
        """The bytes of ``oid`` (loose or packed), verified: a tampered or truncated object is a RemoteError."""
        data = self._read_packed(oid, refresh=False)
        if data is None:
            try:
                data = self.fs.cat_file(self._object(oid))
            except FileNotFoundError:
                data = self._read_packed(oid, refresh=True)  # packed by a push that ran since the listing
                if data is None:
                    if missing_ok:
                        raise
                    raise self.lacks(oid) from None
            except Exception as exc:  # noqa: BLE001
                raise self._fail(f"reading object {oid}", exc) from None
        if self.hash.of(data) != oid:
            raise self.corrupt(oid)
        return data

    def lacks(self, oid: ObjectId) -> RemoteError:
        """The error for an object this remote should hold and does not."""
        return RemoteError(f"remote {self.name} ({self.url}) lacks object {oid}",
                           "the remote is incomplete; push it again from a complete clone")

    def corrupt(self, oid: ObjectId) -> RemoteError:
        """The error for an object from this remote whose bytes do not hash to its id."""
        return RemoteError(f"object {oid} from remote {self.name} ({self.url}) is corrupt: its bytes do not hash to its id",
                           "nothing was stored; repair the remote (push from a good copy) and fetch again")

    def download(self, oid: ObjectId, dest: Path, advance: Callable[[int], None] = lambda n: None, size: int = 0) -> None:
        """Copy loose object ``oid`` (``size`` bytes) into local file ``dest``, streamed, reporting
        bytes to ``advance`` as they arrive (not verified here: the receiving store re-hashes it)."""
        progress = _reporting(advance, size)
        try:
            files.receive_file(lambda path: self.fs.get_file(self._object(oid), path, callback=progress), dest)
            progress.finish()
        except FileNotFoundError:
            raise
        except OSError as exc:  # this machine's disk (full, read-only, the file refused) is not the remote's fault
            local = exc.errno in files.LOCAL_ONLY or (exc.filename is not None and Path(exc.filename) == dest)
            classified = files.storage_error(exc, dest, "write") if local else None
            raise classified or self._fail(f"reading object {oid}", exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"reading object {oid}", exc) from None

    def _read_packed(self, oid: ObjectId, refresh: bool) -> bytes | None:
        found = self.packed(refresh=refresh).get(oid)
        if found is None:
            return None
        pack_id, offset, length = found
        return self.pack_bytes(pack_id)[offset:offset + length]

    def read_objects(self, oids: Iterable[ObjectId]) -> dict[ObjectId, bytes]:
        """Many objects, read concurrently (small objects do not cost one round trip each in turn)."""
        oids = list(oids)
        with ThreadPoolExecutor(WORKERS) as pool:
            return dict(zip(oids, pool.map(self.read_object, oids)))

    def write_object(self, oid: ObjectId, data: bytes | memoryview | Path, advance: Callable[[int], None] | None = None,
                     verify: Callable[[], object] | None = None) -> None:
        """Store one loose object: its bytes, or a local file holding them, whose bytes are reported
        to ``advance`` as they go. ``verify`` (raising on damage) checks the file while it is copied
        (before, where the copy publishes as it ends): a damaged file publishes nothing."""
        self._put(self._object(oid), data, f"object {oid}", advance, verify)

    def _put(self, path: str, data: bytes | memoryview | Path, what: str, advance: Callable[[int], None] | None = None,
             verify: Callable[[], object] | None = None) -> None:
        """Write one remote file whole: on a file system under a temporary name, renamed once written
        and ``verify``d (the check reads the file while it is copied); elsewhere one put (atomic on S3),
        after the check. A local ``Path`` is copied by the filesystem (not read into memory here)."""
        progress = _reporting(advance or (lambda n: None), data.stat().st_size if isinstance(data, Path) else len(data))
        target = f"{path}.tmp-{time.monotonic_ns()}-{threading.get_ident()}" if self._local else path
        try:
            if self._local and (folder := path.rpartition("/")[0]) not in self._made:
                self.fs.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            with ThreadPoolExecutor(1) as pool:
                checked = pool.submit(verify if verify is not None and self._local else lambda: None)
                if verify is not None and not self._local:
                    verify()
                try:
                    if isinstance(data, Path):
                        self.fs.put_file(str(data), target, callback=progress)
                    else:
                        self.fs.pipe_file(target, bytes(data))
                finally:
                    checked.result()
            if target != path:
                self.fs.mv(target, path)
        except BaseException as exc:
            if target != path:
                self._remove_quietly(target)
            if isinstance(exc, DithubError) or not isinstance(exc, Exception):
                raise  # the local side's own error (a damaged object) names itself
            raise self._fail(f"writing {what}", exc) from None
        progress.finish()

    def _remove_quietly(self, path: str) -> None:
        with suppress(Exception):  # gone already, or the remote refuses: gc's temp sweep finds it
            self.fs.rm_file(path)

    # -- refs ------------------------------------------------------------------
    def refs(self) -> dict[str, ObjectId]:
        """Every valid ref (``refs/heads/…``, ``refs/tags/…``, ``refs/bases/…``) and the commit it
        names. What a remote lists is untrusted: names that are no valid ref, files over
        ``MAX_REF_BYTES`` and values that are no object id are left out, each recorded with why in
        ``self.skipped``; no path is ever formed from them."""
        self.skipped = []
        try:
            self.fs.invalidate_cache(f"{self.root}/refs")
            if not self.fs.exists(f"{self.root}/refs"):
                return {}
            found = self.fs.find(f"{self.root}/refs", detail=True)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("listing refs", exc) from None
        paths: dict[str, str] = {}
        for path, info in found.items():
            if not path.startswith(self.root + "/") or path.endswith(".lock"):
                continue
            name = path[len(self.root) + 1:]
            if self.working and name.startswith(REMOTES):
                continue  # what that repository fetched from its own remotes: not its branches
            problem = full_ref_problem(name, REMOTE_NAMESPACES)
            if problem is None and int(info.get("size") or 0) > MAX_REF_BYTES:
                problem = f"its file is over {MAX_REF_BYTES} bytes"
            if problem:
                self.skipped.append((name, problem))
            else:
                paths[path] = name
        try:
            contents = self.fs.cat(list(paths)) if paths else {}
        except Exception as exc:  # noqa: BLE001
            raise self._fail("reading refs", exc) from None
        out = {}
        for path, data in contents.items():
            value = data[:MAX_REF_BYTES].decode(errors="replace").strip() if isinstance(data, bytes) else ""
            if is_object_id(value):
                out[paths[path]] = value
            else:
                self.skipped.append((paths[path], "it does not hold a commit id"))
        return out


class RemoteRefs(BaseRefStore):
    """A remote's refs as a ref store: one file per ref holding a commit id, no reflog (a bare
    repository). Its lock primitive is an object created exclusively (O_EXCL on a file system, a
    conditional ``If-None-Match: *`` put on S3) holding its time, broken once STALE_LOCK_SECONDS old
    (a remote has no flock to tell a live holder from a killed one)."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def read_raw(self, name: str) -> str | None:
        """The commit id at ``name``, or None — also for a file that holds no id (what a remote
        holds is untrusted: such a value is never compared, printed or kept)."""
        try:
            value = self.loc.fs.cat_file(self.loc._ref(name))[: MAX_REF_BYTES + 1].decode(errors="replace").strip()
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.loc._fail(f"reading {name}", exc) from None
        return value if is_object_id(value) else None

    def names(self, prefix: str = "refs/") -> list[str]:
        return sorted(n for n in self.loc.refs() if n.startswith(prefix))

    def reflog(self, name: str) -> list[ReflogEntry]:
        return []

    def _moved(self, name: str, old: str | None, current: str | None) -> RefConflict:
        return RefConflict(f"{name} on remote {self.loc.name} moved to {current[:12] if current else 'nothing'} "
                           f"while this push ran (expected {old[:12] if old else 'nothing'})",
                           "fetch, merge or rebase, and push again")

    def _busy(self, name: str) -> RefConflict:
        return RefConflict(f"{name} on remote {self.loc.name} is being updated by another push", "try again in a moment")

    @contextmanager
    def _locked(self, name: str) -> Iterator[str]:
        lock = self._acquire(name)
        try:
            yield lock
        finally:
            self.loc._remove_quietly(lock)  # a leftover lock goes stale and is broken later

    def _acquire(self, name: str) -> str:
        loc = self.loc
        lock = loc._ref(name) + ".lock"
        for attempt in range(2):
            try:
                loc.fs.makedirs(lock.rpartition("/")[0], exist_ok=True)
                if loc._local:
                    with loc.fs.open(lock, "xb") as f:
                        f.write(str(time.time()).encode())
                else:
                    loc.fs.pipe_file(lock, str(time.time()).encode(), mode="create")
                return lock
            except FileExistsError:
                if attempt == 0 and self._stale(lock):
                    loc.fs.rm_file(lock)
                    continue
                raise self._busy(name) from None
            except Exception as exc:  # noqa: BLE001
                if "PreconditionFailed" in type(exc).__name__ or "412" in str(exc) or "PreconditionFailed" in str(exc):
                    raise self._busy(name) from None
                raise loc._fail(f"locking {name}", exc) from None
        raise AssertionError("unreachable")

    def _stale(self, lock: str) -> bool:
        """Whether ``lock`` was written more than STALE_LOCK_SECONDS ago. Empty or unreadable counts
        as live: its pusher has created it (O_EXCL) and is about to write its time."""
        try:
            written = float(self.loc.fs.cat_file(lock).decode())
        except Exception:  # noqa: BLE001  unreadable, or empty: treat as live
            return False
        return time.time() - written > STALE_LOCK_SECONDS

    def _write(self, name: str, new: str | None, entry: ReflogEntry | None, held: Any) -> None:
        if new is None:
            self.loc._remove_quietly(self.loc._ref(name))
        else:
            self.loc._put(self.loc._ref(name), f"{new}\n".encode(), name)  # on a file system: renamed into place


CONFIG = "config.json"
"""A remote's config file at its root (a working repository's ``.dithub/config.json``)."""
MAX_CONFIG_BYTES = 1 << 20


def check_same_hash(loc: Location, hash: Hash) -> None:
    """RemoteError unless the remote names objects by ``hash`` (this repository's): ids of one hash
    mean nothing in a store of the other, so no object or ref may cross."""
    if loc.hash.name != hash.name:
        raise RemoteError(f"remote {loc.name} ({loc.url}) names objects by {loc.hash.name} and this repository by {hash.name}: "
                          "their objects and refs cannot be exchanged",
                          f"convert one side (dithub migrate --hash {loc.hash.name}, or migrate the remote's clone and push "
                          "it to a new remote), or clone the remote afresh")
