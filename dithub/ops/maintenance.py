"""fsck (integrity and connectivity) and gc (pruning unreachable objects)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptObject, DithubError, ObjectNotFound, StorageError
from ..progress import ProgressFactory, no_progress
from ..store import BaseObjectStore, BaseRefStore, ObjectId
from ..store.graph import objects, walk
from ..store.refs import SPECIAL, TAGS
from ..store.objects import inspect
from ..store.view import RepoView
from .executor import Executor


@dataclass
class FsckReport:
    objects: int = 0
    bytes: int = 0
    corrupt: list[tuple[ObjectId, str]] = field(default_factory=list)
    missing: list[tuple[ObjectId, str]] = field(default_factory=list)
    bad_refs: list[tuple[str, str]] = field(default_factory=list)
    dangling: int = 0
    stale_locks: list[str] = field(default_factory=list)
    temp_files: int = 0
    absent_bases: list[ObjectId] = field(default_factory=list)
    """Base checkpoints commits record but a selective fetch left out (not damage: fetch --with-base)."""
    repaired: list[ObjectId] = field(default_factory=list)
    """Objects ``fsck --repair`` restored (damaged or missing ones, fetched again from a remote)."""

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.bad_refs)


@dataclass
class GcReport:
    removed_objects: int = 0
    removed_bytes: int = 0
    removed_temp_files: int = 0
    kept_objects: int = 0


def check_object(store: BaseObjectStore, oid: ObjectId, set_aside: bool = False) -> str | None:
    """None if ``oid`` hashes right and parses as its type, else the reason (a damaged object leaves
    the store when ``set_aside``: a repair then restores it)."""
    try:
        inspect(oid, store.read_buffer(oid, set_aside=set_aside))
    except CorruptObject as exc:
        return exc.message
    except StorageError as exc:  # unreadable (permission denied): damage to report
        return f"unreadable: {exc.message}"
    except OSError as exc:  # an I/O error of the disk
        return f"unreadable: {exc.strerror or exc}"
    return None


def reachable(store: BaseObjectStore, roots: Iterable[ObjectId]) -> tuple[set[ObjectId], list[tuple[ObjectId, str]]]:
    """Objects reachable from commit ids ``roots`` (parents, trees, bases, tensors), and the missing
    ones with what named them. Damaged objects are the per-object pass's to report: here they are leaves."""
    seen: set[ObjectId] = set()
    missing: list[tuple[ObjectId, str]] = []
    damaged: set[ObjectId] = set()

    def read_many(ids: list[ObjectId]) -> dict[ObjectId, bytes | memoryview]:
        out: dict[ObjectId, bytes | memoryview] = {}
        for oid in ids:
            try:
                if store.contains(oid):
                    out[oid] = store.read_buffer(oid, set_aside=False)
            except (CorruptObject, ObjectNotFound):
                damaged.add(oid)
        return out

    for visit in walk(objects(roots), read_many, corrupt=lambda oid, _exc: damaged.add(oid)):
        oid = visit.link.id
        seen.add(oid)
        absent = visit.missing or (visit.data is None and not store.contains(oid))
        if absent and oid not in damaged:
            referrer = "a ref" if visit.via is None else f"{'commit' if visit.link.kind != 'tensor' else 'tree'} {visit.via}"
            detail = f" ({visit.link.name})" if visit.link.kind == "tensor" else " (base)" if visit.link.name == "base" else ""
            missing.append((oid, f"{visit.link.kind} referenced by {referrer}{detail}"))
    return seen, missing


def ref_roots(refs: BaseRefStore, with_reflogs: bool) -> tuple[dict[str, ObjectId], list[ObjectId]]:
    """Ref tips, plus (optionally) every commit named in a reflog."""
    tips = refs.as_dict("refs/")
    tips.update({special: oid for special in SPECIAL if (oid := refs.resolve(special))})
    extra = [o for name in tips for e in refs.reflog(name) for o in (e.old, e.new) if o] if with_reflogs else []
    return tips, extra


def fsck(store: BaseObjectStore, refs: BaseRefStore, progress: ProgressFactory = no_progress, *,
         set_aside: bool = False, executor: Executor | None = None, opener: Callable[[], RepoView] | None = None) -> FsckReport:
    """Re-hash every object, check every ref and that everything reachable is present; with
    ``set_aside``, damaged objects leave the store (so a fetch of their bytes restores them). On an
    ``executor`` (with ``opener``, how its workers open the repository) the objects are re-hashed as
    tasks of a few thousand each; the graph is walked here."""
    report = FsckReport()
    ids = list(store)
    if executor is not None and executor.name != "local" and opener is not None:
        groups = [ids[i:i + CHECK_GROUP] for i in range(0, len(ids), CHECK_GROUP)]
        advance = progress(f"checking objects on {executor.name}", len(groups), "tasks")
        checked = []
        for part in executor.map(_check_task, groups, shared=(opener, set_aside)):
            checked.extend(part)
            advance(1)
    else:
        advance = progress("checking objects", len(ids), "objects")
        checked = []
        for oid in ids:
            checked.append(_checked(store, oid, set_aside))
            advance(1)
    for oid, size, reason in checked:
        report.objects += 1
        report.bytes += size
        if reason:
            report.corrupt.append((oid, reason))
    tips, _ = ref_roots(refs, with_reflogs=False)
    for name, oid in tips.items():
        try:
            if store.contains(oid):
                store.read_commit(store.peel(oid) if name.startswith(TAGS) else oid)  # a tag may be an annotated tag object
        except CorruptObject as exc:
            report.bad_refs.append((name, f"points to {oid}: {exc.message}"))
    seen, missing = reachable(store, [o for o in tips.values()])
    report.absent_bases = sorted({oid for oid, why in missing if why.startswith("tree referenced by") and why.endswith("(base)")})
    report.missing = [(oid, why) for oid, why in missing if oid not in report.absent_bases]
    report.dangling = len(set(ids) - seen)
    report.stale_locks = [str(p) for p in refs.locks()]
    report.temp_files = len(store.temp_files())
    return report


CHECK_GROUP = 2000
"""Objects re-hashed per executor task."""


def _checked(store: BaseObjectStore, oid: ObjectId, set_aside: bool) -> tuple[ObjectId, int, str | None]:
    """(object, its size, why it is damaged or None)."""
    size = 0
    with contextlib.suppress(DithubError, OSError):
        size = store.size(oid)
    return oid, size, check_object(store, oid, set_aside)


def _check_task(shared: tuple[Callable[[], RepoView], bool], ids: list[ObjectId]) -> list[tuple[ObjectId, int, str | None]]:
    opener, set_aside = shared
    store = opener().store
    return [_checked(store, oid, set_aside) for oid in ids]


def gc(store: BaseObjectStore, refs: BaseRefStore, grace_seconds: float = 3600.0) -> GcReport:
    """Delete objects no ref or reflog reaches, older than ``grace_seconds`` (the grace period
    protects objects a concurrent commit has written but not yet pointed a ref at)."""
    tips, extra = ref_roots(refs, with_reflogs=True)
    keep, _missing = reachable(store, list(tips.values()) + extra)
    report = GcReport()
    now = time.time()
    for oid in list(store):
        written = store.mtime(oid)
        if oid in keep or (written is not None and now - written < grace_seconds):
            report.kept_objects += 1
            continue
        report.removed_bytes += store.size(oid)
        store.delete(oid)
        report.removed_objects += 1
    for tmp in store.temp_files(older_than=grace_seconds):
        Path(tmp).unlink(missing_ok=True)
        report.removed_temp_files += 1
    return report
