"""``dithub migrate --hash blake3``: rename every object of a repository by another hash.

Tensors and blobs keep their bytes (only their ids change); trees, commits, refs, reflogs, op
records and verify reports are rewritten to name the new ids, leaves first. A commit's signature
covers its old bytes and cannot follow it: migrated commits are unsigned (the report counts them). Everything is written
into ``.dithub/migrate/`` (a store of the new hash, the refs, the logs, ``HEAD``, the id map) while
the repository stays as it was, so a crash before the switch leaves the old repository intact (the
next ``migrate`` discards the half-made copy). ``READY`` then marks the copy complete, and the
switch moves each part into place and rewrites the config last; a crash during the switch is
finished by the next open of the repository (``finish_migration``), so the repository is always
wholly the old one or wholly the new one. The map from old ids to new stays at
``.dithub/id-map-<old>-<new>.tsv`` (one ``old new`` pair per line).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, CorruptObject
from ..progress import ProgressFactory, no_progress
from ..store import ObjectId, Tree, atomic_write, fsync_dir, hash_named, read_config, write_config
from ..store.objects import Commit, FileEntry, Op, Tag, TensorEntry, decode_commit, decode_tag, decode_tree, object_type
from ..store.objectstore import DiskObjectStore
from ..store.view import RepoView

STAGE = "migrate"
READY = "READY"
PARTS = ("objects", "refs", "logs", "verify", "HEAD", "ORIG_HEAD")
"""What the switch moves into ``.dithub``, in order (the config is rewritten after them)."""


@dataclass
class MigrateReport:
    old: str
    new: str
    objects: int
    refs: int
    reflog_entries: int
    dropped_reflog_entries: int
    """Entries naming objects no longer in the repository (collected by gc): their new ids are unknowable."""
    map_file: Path
    dropped_signatures: int = 0
    """Signed commits: a signature covers the commit's old bytes, so the new commit is unsigned
    (re-sign it: ``dithub commit -S`` the branch heads again, or keep the old repository's copy)."""


def migrate(repo: RepoView, to: str, progress: ProgressFactory = no_progress,
            crash: Callable[[str], None] = lambda where: None) -> MigrateReport:
    """Rename every object of ``repo`` by hash ``to`` (see the module docstring). ``crash(where)``
    is a test hook called at each step."""
    if repo.path is None:
        raise BadInput("an in-memory repository has nothing to migrate")
    try:
        new_hash = hash_named(to)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    old_hash = repo.store.hash
    if new_hash.name == old_hash.name:
        raise BadInput(f"this repository already names its objects by {to}")
    meta = repo.path / ".dithub"
    stage = meta / STAGE
    if stage.exists():  # a copy a crash left before it was complete
        shutil.rmtree(stage)
    stage.mkdir()
    target = DiskObjectStore(stage / "objects", stage / "tmp", new_hash)
    stats: dict[str, list[int]] = {}
    ids = _rewrite_objects(repo, target, progress, crash, stats)
    target.sync()
    crash("objects")
    refs, entries, dropped = _rewrite_refs(meta, stage, ids)
    _rewrite_reports(meta, stage, ids)
    map_file = f"id-map-{old_hash.name}-{new_hash.name}.tsv"
    atomic_write(stage / map_file, "".join(f"{o} {n}\n" for o, n in sorted(ids.items())).encode())
    crash("refs")
    atomic_write(stage / READY, json.dumps({"hash": new_hash.name, "map": map_file}).encode())
    fsync_dir(meta)
    crash("ready")
    finish_migration(meta, crash)
    return MigrateReport(old_hash.name, new_hash.name, len(ids), refs, entries, dropped, meta / map_file, stats["unsigned"][0])


def finish_migration(meta: Path, crash: Callable[[str], None] = lambda where: None) -> bool:
    """Complete a migration whose copy is ready (``.dithub/migrate/READY``): move each part into
    place, then the config; idempotent, so a crash anywhere in it is finished by the next call.
    Whether there was one to finish."""
    stage = meta / STAGE
    ready = stage / READY
    if not ready.is_file():
        return False
    marker = json.loads(ready.read_text())
    aside = meta / "pre-migrate"
    aside.mkdir(exist_ok=True)
    for part in PARTS:
        new = stage / part
        if not new.exists():
            continue  # moved already (or the repository had none)
        if (meta / part).exists() and not (aside / part).exists():
            os.replace(meta / part, aside / part)
        elif (meta / part).exists():  # the old one is aside already: this is a half-moved new one
            _remove(meta / part)
        os.replace(new, meta / part)
        fsync_dir(meta)
        crash(f"switch {part}")
    if (stage / marker["map"]).exists():
        os.replace(stage / marker["map"], meta / marker["map"])
    config = read_config(meta)
    config["hash"] = marker["hash"]
    write_config(meta, config)
    fsync_dir(meta)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(meta / "cache" / "remotes", ignore_errors=True)  # pack indexes keyed by the old ids
    shutil.rmtree(stage, ignore_errors=True)
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _rewrite_objects(repo: RepoView, target: DiskObjectStore, progress: ProgressFactory,
                     crash: Callable[[str], None], stats: dict[str, list[int]]) -> dict[ObjectId, ObjectId]:
    """Every object of ``repo`` written to ``target`` under its new id; old id -> new id
    (``stats["unsigned"]``: the signed commits whose signatures could not follow)."""
    kinds: dict[ObjectId, str] = {}
    for oid in repo.store:
        kinds[oid] = object_type(repo.store.peek(oid, 64))
    ids: dict[ObjectId, ObjectId] = {}
    unsigned = stats.setdefault("unsigned", [0])
    advance = progress("migrating objects", len(kinds), "objects")
    leaves = [oid for oid, kind in kinds.items() if kind in ("tensor", "blob")]

    def stored(oid: ObjectId, new: ObjectId, _fresh: bool) -> None:
        ids[oid] = new
        advance(1)

    target.put_many(((oid, [repo.store.read_buffer(oid)]) for oid in leaves), stored)
    crash("leaves")

    def mapped(oid: ObjectId | None, what: str) -> ObjectId | None:
        if oid is None:
            return None
        if oid not in ids:
            if oid in kinds and kinds[oid] == "commit":
                ids[oid] = commit(oid)
            else:
                raise BadInput(f"{what} names object {oid}, which is not in this repository",
                               "fetch what is missing first (dithub fsck lists it; a selective fetch leaves bases out)")
        return ids[oid]

    for oid in [o for o, kind in kinds.items() if kind == "tree"]:
        tree = decode_tree(oid, repo.store.read(oid))
        tensors = {n: TensorEntry(mapped(e.id, f"tree {oid}") or "", e.dtype, e.shape) for n, e in tree.tensors.items()}
        files = {n: FileEntry(mapped(f.blob, f"tree {oid}"), mapped(f.header, f"tree {oid}"), f.tensors) for n, f in tree.files.items()}
        ids[oid] = target.write_tree(Tree(tree.kind, tree.config, tensors, files, tree.names))
        advance(1)

    def commit(oid: ObjectId) -> ObjectId:
        """The new id of commit ``oid``, its parents and inputs first (iteratively: histories are deep)."""
        stack = [oid]
        while stack:
            top = stack[-1]
            if top in ids:
                stack.pop()
                continue
            c = decode_commit(top, repo.store.read(top))
            named = [*c.parents, *c.op.inputs]
            pending = [n for n in named if n not in ids and kinds.get(n) == "commit" and n not in stack]
            if pending:
                stack.extend(pending)
                continue
            what = f"commit {top}"
            new = Commit(mapped(c.tree, what) or "", [mapped(p, what) or "" for p in c.parents], mapped(c.base, what), c.author,
                         c.time, c.message, Op(c.op.name, c.op.method, _map_values(c.op.params, ids),
                                               [ids.get(i, i) for i in c.op.inputs], [mapped(d, what) or "" for d in c.op.data]))
            unsigned[0] += c.signature is not None  # a signature covers the old ids: it cannot move
            ids[top] = target.write_commit(new)
            advance(1)
            stack.pop()
        return ids[oid]

    for oid in [o for o, kind in kinds.items() if kind == "commit"]:
        commit(oid)
    for oid in [o for o, kind in kinds.items() if kind == "tag"]:
        tag = decode_tag(oid, repo.store.read(oid))
        unsigned[0] += tag.signature is not None
        ids[oid] = target.write(Tag(mapped(tag.object, f"tag {oid}") or "", tag.name, tag.tagger, tag.time, tag.message).encode())
        advance(1)
    unknown = [o for o, kind in kinds.items() if o not in ids]
    if unknown:
        raise CorruptObject(f"object {unknown[0]} is of no known kind", "run dithub fsck")
    return ids


def _map_values(value: Any, ids: dict[ObjectId, ObjectId]) -> Any:
    """``value`` with every string that is an old object id replaced by its new one (op parameters
    that name objects: a revert's ``reverted``, a defence's ``vector``)."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_map_values(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _map_values(v, ids) for k, v in value.items()}
    return value


def _rewrite_refs(meta: Path, stage: Path, ids: dict[ObjectId, ObjectId]) -> tuple[int, int, int]:
    """Refs, HEAD and reflogs into ``stage`` with the new ids: (refs, reflog entries kept, dropped)."""
    refs = 0
    for path in [meta / "HEAD", meta / "ORIG_HEAD", *sorted(p for p in (meta / "refs").rglob("*") if p.is_file())]:
        if not path.is_file() or path.name.endswith(".lock"):
            continue
        raw = path.read_text().strip()
        if not raw.startswith("ref: "):
            if raw not in ids:
                raise BadInput(f"{path.relative_to(meta)} names object {raw}, which is not in this repository",
                               "fetch it, or delete the ref, then migrate")
            raw = ids[raw]
            refs += 1
        out = stage / path.relative_to(meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, (raw + "\n").encode())
    kept = dropped = 0
    for path in sorted(p for p in (meta / "logs").rglob("*") if p.is_file()) if (meta / "logs").is_dir() else []:
        lines = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                old, new = entry["old"], entry["new"]
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash, as the reflog reader skips it
            if (old is not None and old not in ids) or (new is not None and new not in ids):
                dropped += 1
                continue
            entry.update(old=ids.get(old) if old else None, new=ids.get(new) if new else None)
            lines.append(json.dumps(entry, sort_keys=True) + "\n")
            kept += 1
        out = stage / path.relative_to(meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, "".join(lines).encode())
    return refs, kept, dropped


def _rewrite_reports(meta: Path, stage: Path, ids: dict[ObjectId, ObjectId]) -> None:
    """Verify reports (``verify/ID.json``) under the new ids, the ids inside them mapped too."""
    folder = meta / "verify"
    if not folder.is_dir():
        return
    (stage / "verify").mkdir()
    for path in folder.glob("*.json"):
        oid = path.stem
        if oid not in ids:
            continue
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        atomic_write(stage / "verify" / f"{ids[oid]}.json", json.dumps(_map_values(report, ids), indent=1, sort_keys=True).encode())


__all__ = ["MigrateReport", "finish_migration", "migrate"]
