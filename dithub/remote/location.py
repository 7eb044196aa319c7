"""A remote repository on any fsspec filesystem: a local path, file://, memory://, s3://.

Layout under the URL (a bare repository): ``objects/ab/cdef…`` (the same bytes as loose objects)
and ``refs/heads/…``, ``refs/tags/…``, ``refs/bases/…`` (one commit id per file). Every object read
is re-hashed before it is returned; a ref changes under a lock object created exclusively (an
O_EXCL create on a filesystem, a conditional ``If-None-Match: *`` put on S3), so two pushers never
both move it.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import RefConflict, RemoteError
from ..store import ObjectId, is_object_id, object_id

STALE_LOCK_SECONDS = 60.0
WORKERS = 8


class Location:
    """One remote: object and ref access on its filesystem."""

    def __init__(self, url: str, name: str = "remote", options: Mapping[str, Any] | None = None) -> None:
        import fsspec

        self.url, self.name = url, name
        # no listings cache and no shared instance: other processes write to the same remote, and a
        # cached folder listing would hide their objects (s3fs then reports them missing)
        settings = {"use_listings_cache": False, "skip_instance_cache": True, **dict(options or {})}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **settings)
        except (ImportError, ValueError) as exc:
            hint = "pip install s3fs" if url.startswith("s3://") else "use a path, file://, memory:// or s3:// URL"
            raise RemoteError(f"remote {name} ({url}) cannot be opened: {exc}", hint) from None
        self.root = self.root.rstrip("/")
        self._local = "file" in ((self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol or ()))
        self._made: set[str] = set()

    # -- paths -----------------------------------------------------------------
    def _object(self, oid: ObjectId) -> str:
        return f"{self.root}/objects/{oid[:2]}/{oid[2:]}"

    def _ref(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _fail(self, what: str, exc: Exception) -> RemoteError:
        return RemoteError(f"remote {self.name} ({self.url}): {what}: {exc}", "check the URL, the credentials and the network")

    # -- objects ---------------------------------------------------------------
    def object_ids(self) -> set[ObjectId]:
        """Every object id the remote holds (one listing, not one request per object)."""
        return set(self.object_sizes())

    def object_sizes(self) -> dict[ObjectId, int]:
        """Every object the remote holds and its size in bytes, from one listing."""
        try:
            self.fs.invalidate_cache(f"{self.root}/objects")  # fsspec instances are shared: never a stale listing
            if not self.fs.exists(f"{self.root}/objects"):
                return {}
            found = self.fs.find(f"{self.root}/objects", detail=True)
        except Exception as exc:  # noqa: BLE001  fsspec backends raise their own errors
            raise self._fail("listing objects", exc) from None
        sizes = {}
        for path, info in found.items():
            parts = path.rstrip("/").split("/")
            oid = parts[-2] + parts[-1] if len(parts) >= 2 else ""
            if is_object_id(oid):
                sizes[oid] = int(info.get("size") or 0)
        return sizes

    def read_object(self, oid: ObjectId, missing_ok: bool = False) -> bytes:
        """The bytes of ``oid``, verified: a tampered or truncated object is a RemoteError."""
        try:
            data = self.fs.cat_file(self._object(oid))
        except FileNotFoundError:
            if missing_ok:
                raise
            raise RemoteError(f"remote {self.name} ({self.url}) lacks object {oid}",
                              "the remote is incomplete; push it again from a complete clone") from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"reading object {oid}", exc) from None
        if object_id(data) != oid:
            raise RemoteError(f"object {oid} from remote {self.name} ({self.url}) is corrupt: its bytes do not hash to its id",
                              "nothing was stored; repair the remote (push from a good copy) and fetch again")
        return data

    def read_objects(self, oids: Iterable[ObjectId]) -> dict[ObjectId, bytes]:
        """Many objects, read concurrently (small objects do not cost one round trip each in turn)."""
        oids = list(oids)
        with ThreadPoolExecutor(WORKERS) as pool:
            return dict(zip(oids, pool.map(self.read_object, oids)))

    def write_object(self, oid: ObjectId, data: bytes | memoryview) -> None:
        """Store one object: written whole under a temporary name, then renamed (a put on S3 is atomic)."""
        path = self._object(oid)
        try:
            if self._local:
                folder = path.rpartition("/")[0]
                if folder not in self._made:
                    self.fs.makedirs(folder, exist_ok=True)
                    self._made.add(folder)
                tmp = f"{path}.tmp-{time.monotonic_ns()}"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
            else:
                self.fs.pipe_file(path, bytes(data))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"writing object {oid}", exc) from None

    # -- refs ------------------------------------------------------------------
    def refs(self) -> dict[str, ObjectId]:
        """Every ref (``refs/heads/…``, ``refs/tags/…``, ``refs/bases/…``) and the commit it names."""
        out = {}
        try:
            self.fs.invalidate_cache(f"{self.root}/refs")
            if not self.fs.exists(f"{self.root}/refs"):
                return {}
            paths = [p for p in self.fs.find(f"{self.root}/refs") if not p.endswith(".lock")]
            contents = self.fs.cat(paths) if paths else {}
        except Exception as exc:  # noqa: BLE001
            raise self._fail("listing refs", exc) from None
        for path, data in contents.items():
            name = "refs/" + path.split("/refs/", 1)[1] if "/refs/" in path else path
            value = data.decode().strip() if isinstance(data, bytes) else ""
            if is_object_id(value):
                out[name] = value
        return out

    def read_ref(self, name: str) -> ObjectId | None:
        try:
            value = self.fs.cat_file(self._ref(name)).decode().strip()
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"reading {name}", exc) from None
        return value if is_object_id(value) else None

    def _lock(self, name: str) -> str:
        lock = self._ref(name) + ".lock"
        for attempt in range(2):
            try:
                self.fs.makedirs(lock.rpartition("/")[0], exist_ok=True)
                if self._local:
                    with self.fs.open(lock, "xb") as f:
                        f.write(str(time.time()).encode())
                else:
                    self.fs.pipe_file(lock, str(time.time()).encode(), mode="create")
                return lock
            except FileExistsError:
                if attempt == 0 and self._stale(lock):
                    self.fs.rm_file(lock)
                    continue
                raise RefConflict(f"{name} on remote {self.name} is being updated by another push",
                                  "try again in a moment") from None
            except Exception as exc:  # noqa: BLE001
                if "PreconditionFailed" in type(exc).__name__ or "412" in str(exc) or "PreconditionFailed" in str(exc):
                    raise RefConflict(f"{name} on remote {self.name} is being updated by another push",
                                      "try again in a moment") from None
                raise self._fail(f"locking {name}", exc) from None
        raise AssertionError("unreachable")

    def _stale(self, lock: str) -> bool:
        try:
            written = float(self.fs.cat_file(lock).decode() or 0)
        except Exception:  # noqa: BLE001  unreadable: treat as live
            return False
        return time.time() - written > STALE_LOCK_SECONDS

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId) -> None:
        """Point remote ref ``name`` at ``new`` if it still holds ``old`` (compare-and-swap)."""
        lock = self._lock(name)
        try:
            current = self.read_ref(name)
            if current != old:
                raise RefConflict(f"{name} on remote {self.name} moved to {current[:12] if current else 'nothing'} "
                                  f"while this push ran (expected {old[:12] if old else 'nothing'})",
                                  "fetch, merge or rebase, and push again")
            self.fs.pipe_file(self._ref(name), f"{new}\n".encode())
        except RefConflict:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"updating {name}", exc) from None
        finally:
            try:
                self.fs.rm_file(lock)
            except Exception:  # noqa: BLE001  a leftover lock goes stale and is broken later
                pass
