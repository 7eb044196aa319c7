"""fetch, push, clone, pull and the remotes' configuration (``.dithub/config.json``)."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BadInput, DithubError, RefConflict, RefNotFound, RemoteError
from ..progress import ProgressFactory, no_progress
from ..store.history import is_ancestor
from ..store import ObjectId, atomic_write, check_ref_name, read_config, write_config
from ..store.graph import commits, complete, walk
from ..store.objects import Link, inspect
from ..store.refs import BASES, HEADS, REMOTES, check_full_ref, full_ref_problem
from ..remote.location import WORKERS, Location, check_same_hash
from ..remote.packs import PACKED_BELOW
from ..remote.transfer import Receiver, plan, send_tensors
from ..store.view import RepoView
from .branches import existing, target_branch
from .maintenance import FsckReport, fsck, reachable, ref_roots
from .sign import check_commit, repo_signers

@dataclass
class SyncResult:
    remote: str
    objects: int = 0
    bytes: int = 0
    requests: int = 0
    """Storage calls made on the remote (reads, writes, listings)."""
    refs: dict[str, tuple[ObjectId | None, ObjectId]] = field(default_factory=dict)
    """Ref name (local for fetch, remote for push) -> (old, new)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Refs the remote listed that were not taken: (name, why): invalid names, oversized files."""


# -- configuration ---------------------------------------------------------------


def _config_path(repo: RepoView) -> Path:
    if repo.path is None:
        raise BadInput("an in-memory repository has no remotes")
    return repo.path / ".dithub" / "config.json"


def _config(repo: RepoView) -> dict[str, Any]:
    return read_config(_config_path(repo).parent)


def _save(repo: RepoView, config: dict[str, Any]) -> None:
    write_config(_config_path(repo).parent, config)


def remotes(repo: RepoView) -> dict[str, dict[str, Any]]:
    return dict(_config(repo).get("remotes", {}))


def remote_add(repo: RepoView, name: str, url: str, options: dict[str, Any] | None = None) -> None:
    check_ref_name(name, "remote")
    check_full_ref(f"{REMOTES}{name}/x")  # push and fetch must be able to name its tracking refs
    config = _config(repo)
    if name in config.get("remotes", {}):
        raise BadInput(f"remote {name!r} already exists ({config['remotes'][name]['url']})", "remove it first, or pick another name")
    Location(_located(repo, url), name, options)  # fails now, not at the first fetch, on a URL fsspec cannot open
    config.setdefault("remotes", {})[name] = {"url": url, "options": dict(options or {})}
    _save(repo, config)


def _located(repo: RepoView, url: str) -> str:
    """A remote's URL as opened: a relative path is relative to the repository (as git reads one)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url) or Path(url).is_absolute() or repo.path is None:
        return url  # a URL (or something like one, which Location judges), or an absolute path
    return str(repo.path / url)


def remote_remove(repo: RepoView, name: str) -> None:
    config = _config(repo)
    if name not in config.get("remotes", {}):
        raise RefNotFound(f"no remote {name!r}", f"known remotes: {', '.join(sorted(config.get('remotes', {}))) or 'none'}")
    del config["remotes"][name]
    _save(repo, config)
    for ref in repo.refs.names(f"{REMOTES}{name}/"):
        repo.refs.delete(ref, repo.refs.resolve(ref))


def location(repo: RepoView, name: str, *, claim: bool = False) -> Location:
    """Remote ``name``, checked to name objects by this repository's hash (``claim``: a push, which
    records the hash on a remote that holds nothing yet)."""
    known = remotes(repo)
    if name not in known:
        raise RefNotFound(f"no remote {name!r}", f"add it: dithub remote add {name} URL (known: {', '.join(sorted(known)) or 'none'})")
    cache = repo.path / ".dithub" / "cache" / "remotes" / name if repo.path is not None else None
    loc = Location(_located(repo, known[name]["url"]), name, known[name].get("options"), cache=cache)
    if claim:
        loc.claim_hash(repo.store.hash)
    else:
        check_same_hash(loc, repo.store.hash)
    return loc


def set_upstream(repo: RepoView, branch: str, remote: str, remote_branch: str | None = None) -> None:
    config = _config(repo)
    if remote not in config.get("remotes", {}):
        raise RefNotFound(f"no remote {remote!r}", f"add it: dithub remote add {remote} URL")
    config.setdefault("branches", {})[branch] = {"remote": remote, "merge": remote_branch or branch}
    _save(repo, config)


def upstream(repo: RepoView, branch: str) -> tuple[str, str] | None:
    entry = _config(repo).get("branches", {}).get(branch)
    return (entry["remote"], entry["merge"]) if entry else None


# -- fetch -------------------------------------------------------------------------


def _valid_refs(loc: Location) -> dict[str, ObjectId]:
    """The remote's valid refs; RemoteError where it lists refs and none is valid."""
    theirs = loc.refs()
    if not theirs and loc.skipped:
        name, why = loc.skipped[0]
        raise RemoteError(f"remote {loc.name} ({loc.url}) has no valid ref: {len(loc.skipped)} skipped, e.g. {name!r} ({why})",
                          "repair the remote: push to it from a good repository")
    return theirs


def fetch(repo: RepoView, remote: str, branches: list[str] | None = None, *, with_base: bool = False,
          verify_signatures: bool = False, progress: ProgressFactory = no_progress) -> SyncResult:
    """Bring the objects of the remote's branches (all, or ``branches``) and update
    ``refs/remotes/<remote>/<branch>``; tags and bases the repository lacks come along.
    ``verify_signatures``: refuse (moving no ref) unless every branch head fetched has a good
    signature by a key of ``signing.allowedsigners`` (issue 26)."""
    signers = repo_signers(repo) if verify_signatures else None
    if verify_signatures and signers is None:
        raise BadInput("--verify-signatures checks heads against the allowed signers, and none are set",
                       "dithub config signing.allowedsigners FILE")
    loc = location(repo, remote)
    theirs = _valid_refs(loc)
    result = SyncResult(remote, skipped=list(loc.skipped))
    heads = {}
    for name, oid in theirs.items():
        if name.startswith(HEADS):
            problem = full_ref_problem(f"{REMOTES}{remote}/{name[len(HEADS):]}")
            if problem:
                result.skipped.append((name, f"its tracking ref refs/remotes/{remote}/… would be invalid: {problem}"))
            else:
                heads[name[len(HEADS):]] = oid
    if branches:
        unknown = [b for b in branches if b not in heads]
        if unknown:
            raise RefNotFound(f"remote {remote} has no branch {unknown[0]!r}", f"its branches: {', '.join(sorted(heads)) or 'none'}")
        heads = {b: heads[b] for b in branches}
    extra = {} if branches else {n: o for n, o in theirs.items() if not n.startswith(HEADS) and repo.refs.resolve(n) is None}
    roots = list(heads.values()) + list(extra.values())
    receiver = Receiver(repo.store, loc)
    sizes = loc.object_sizes()  # one listing (and the pack indexes): totals for the progress bars

    if not branches:  # everything: every missing object of the listing, many in flight; the walk then checks
        _fetch_listed(repo, loc, receiver, sizes, result, progress)
    for pass_roots in (roots, None):
        if pass_roots is None:  # the second pass: base checkpoints the fetched commits record
            if not (with_base or not branches):
                break
            pass_roots = [t for t in _base_trees(repo, list(heads.values())) if not repo.store.contains(t)]
        todo = plan(pass_roots, repo.store.contains, loc.read_objects, with_base=False, where=f"remote {remote}")
        result.objects += todo.count
        def bring(oid: ObjectId, advance: Callable[[int], None], expect: dict[ObjectId, Link] = todo.expect) -> None:
            receiver.tensor(oid, sizes.get(oid, 0), advance, expect[oid])

        result.bytes += send_tensors(todo.tensors, bring, lambda i: sizes.get(i, 0), progress, f"fetching from {remote}")
        result.bytes += sum(len(data) for _oid, data in todo.small)
        receiver.put_held(dict(todo.small), strict=True)
    repo.store.sync()
    if verify_signatures:
        for b, oid in heads.items():
            check = check_commit(repo.store.read_commit(oid), signers)
            if check.status != "good":
                raise RemoteError(f"remote {remote}: the head of {b} ({oid[:12]}) has no good signature: "
                                  f"{check.status}{' (' + check.detail + ')' if check.detail else ''}; no ref was moved",
                                  "ask its author to sign it (commit -S), or add their key to the allowed signers")
    for ref, oid in {**{f"{REMOTES}{remote}/{b}": oid for b, oid in heads.items()}, **extra}.items():
        old = repo.refs.resolve(ref)  # (None for the tags and bases in extra: it lacks them)
        if old != oid:
            repo.refs.set_if_equals(ref, old, oid, f"fetch {remote}")
            result.refs[ref] = (old, oid)
    result.requests = loc.fs.requests
    return result


def _fetch_listed(repo: RepoView, loc: Location, receiver: Receiver, listed: dict[ObjectId, int], result: SyncResult,
                  progress: ProgressFactory) -> None:
    """Fetch every object the remote lists that the local store lacks, concurrently: loose objects
    one request each, packed ones a whole pack at a time."""
    sizes = {o: n for o, n in listed.items() if not repo.store.contains(o)}
    packed = loc.packed(refresh=False)
    by_pack: dict[str, list[ObjectId]] = {}
    for oid in sizes:
        if oid in packed:
            by_pack.setdefault(packed[oid][0], []).append(oid)
    advance = progress(f"fetching from {loc.name}", sum(sizes.values()))
    held: dict[ObjectId, bytes] = {}
    stored: list[int] = []

    def one(oid: ObjectId) -> None:
        try:  # a large loose tensor goes straight to disk; the rest is held, and stored below once what it names is
            data = receiver.bring(oid, sizes[oid], advance, missing_ok=True)
        except FileNotFoundError:  # listed but gone (a listing cache): the walk that follows fetches what is needed
            return
        if data is None:
            stored.append(repo.store.size(oid))
        else:
            held[oid] = data

    with ThreadPoolExecutor(WORKERS) as pool:  # a pack's first read brings it whole; the others are slices of it
        list(pool.map(lambda oids: list(map(one, oids)), by_pack.values()))
        list(pool.map(one, [o for o in sizes if o not in packed]))
    stored.extend(len(held[oid]) for oid in receiver.put_held(held, strict=False))
    result.objects += len(stored)
    result.bytes += sum(stored)


def default_remote(repo: RepoView) -> str | None:
    """``origin`` if configured, else the only remote, else None."""
    known = remotes(repo)
    return "origin" if "origin" in known else (next(iter(known)) if len(known) == 1 else None)


def restore(repo: RepoView, remote: str, oids: list[ObjectId], progress: ProgressFactory = no_progress) -> list[ObjectId]:
    """Fetch ``oids`` (objects found damaged and set aside, or missing) from ``remote`` again, and
    what restoring them shows to be missing below them (a tree's tensors); returns those restored."""
    loc = location(repo, remote)
    receiver = Receiver(repo.store, loc)
    sizes = loc.object_sizes()
    roots = list(ref_roots(repo.refs, with_reflogs=False)[0].values())
    restored: list[ObjectId] = []
    tried: set[ObjectId] = set()
    todo = list(dict.fromkeys(oids))
    advance = progress(f"restoring from {remote}", 0, "objects")
    while todo:
        held: dict[ObjectId, bytes] = {}
        while todo:  # what is asked for, and what the held objects name that is missing too
            oid = todo.pop()
            if oid in tried or oid not in sizes or repo.store.contains(oid):
                continue
            tried.add(oid)
            data = receiver.bring(oid, sizes[oid])
            if data is None:
                restored.append(oid)
            else:
                held[oid] = data
                todo.extend(link.id for link in receiver.missing(oid, data))
            advance(1)
        restored.extend(receiver.put_held(held, strict=False))
        repo.store.sync()
        todo = [oid for oid, _why in reachable(repo.store, roots)[1] if oid not in tried]
    return restored


# -- push --------------------------------------------------------------------------


def push(repo: RepoView, remote: str, branches: list[str] | None = None, *, force: bool = False,
         progress: ProgressFactory = no_progress) -> SyncResult:
    """Send the objects of ``branches`` (default: the current one) with their bases, then move the
    remote's branches by compare-and-swap; a non-fast-forward update needs ``force``."""
    loc = location(repo, remote, claim=True)
    if loc.working:
        raise RemoteError(f"{remote} ({loc.url}) is a working repository: pushing would move its branches under it",
                          f"fetch from the other side instead (dithub -C {loc.url} fetch ...), or push to a bare remote")
    branches = branches or [target_branch(repo, None, "name the branches to push")]
    mine = {b: existing(repo, HEADS, b, "branch") for b in branches}
    for b in branches:
        check_full_ref(f"{REMOTES}{remote}/{b}")  # before the remote moves: the tracking ref must be writable here
    theirs = loc.refs()
    for b, oid in mine.items():
        old = theirs.get(HEADS + b)
        if old and old != oid and not force and not is_ancestor(repo.store, old, oid):
            raise RemoteError(f"push of {b} to {remote} rejected: not a fast-forward (the remote has commits this branch lacks)",
                              f"dithub fetch {remote}, then merge or rebase onto {remote}/{b}; or --force to overwrite")
    bases = _bases_used(repo, list(mine.values()))
    have = complete_on_remote(repo, loc.object_ids())
    read_many = lambda ids: {i: bytes(repo.store.read_buffer(i)) for i in ids}  # noqa: E731
    todo = plan([*mine.values(), *bases.values()], have, read_many, with_base=True, where="this repository")
    result = SyncResult(remote, todo.count)
    large = {t for t in todo.tensors if repo.store.size(t) >= PACKED_BELOW}
    # a large tensor goes as a loose object, copied from its file where the store has one and verified
    # as it is copied: a damaged one stops the push (CorruptObject) before it is published or any ref moves
    def send(oid: ObjectId, advance: Callable[[int], None]) -> None:
        source = repo.store.file(oid)  # its file re-hashed where mapped, while it is copied
        check = (lambda: repo.store.read_buffer(oid)) if source else None
        loc.write_object(oid, source or repo.store.read_buffer(oid), advance, verify=check)

    result.bytes = send_tensors([t for t in todo.tensors if t in large], send, repo.store.size, progress, f"pushing to {remote}")
    # the rest in packs, in any order: `have` trusts only complete objects, so a partial upload resumes
    small = [(t, repo.store.read_buffer(t)) for t in todo.tensors if t not in large] + todo.small
    nbytes = sum(len(d) for _, d in small)
    loc.write_packs(small, progress(f"pushing commits, trees and small tensors to {remote}", nbytes))
    result.bytes += nbytes
    for b, oid in mine.items():
        old = theirs.get(HEADS + b)
        if old == oid:
            continue
        loc.ref_store.compare_and_swap(HEADS + b, old, oid)
        result.refs[HEADS + b] = (old, oid)
        tracking = f"{REMOTES}{remote}/{b}"
        repo.refs.set_if_equals(tracking, repo.refs.resolve(tracking), oid, f"push {remote}")
    for name, base in bases.items():  # the bases the pushed commits use, by name, so a clone has them
        if (ref := BASES + name) not in theirs:
            loc.ref_store.compare_and_swap(ref, None, base)
            result.refs[ref] = (None, base)
    result.requests = loc.fs.requests
    return result


def complete_on_remote(repo: RepoView, ids: set[ObjectId]) -> Callable[[ObjectId], bool]:
    """``have(oid)`` for a push: the remote holds ``oid`` and everything it names (judged from the
    local copies of the objects), so objects uploaded in any order by an interrupted push are sent
    again where something below them is missing."""
    memo: dict[ObjectId, bool] = {}

    def names(oid: ObjectId) -> list[ObjectId]:
        return [link.id for link in inspect(oid, repo.store.read_buffer(oid))[3]]

    def have(oid: ObjectId) -> bool:
        return complete(oid, names, lambda x: x in ids and repo.store.contains(x), memo)

    return have


def _base_trees(repo: RepoView, tips: list[ObjectId]) -> set[ObjectId]:
    """The base checkpoints (tree ids) that commits reachable from ``tips`` record."""
    history = walk(commits(tips), lambda ids: {i: repo.store.read_buffer(i) for i in ids}, follow=lambda link: link.kind == "commit")
    return {link.id for visit in history if (link := visit.link).name == "base"}


def _bases_used(repo: RepoView, tips: list[ObjectId]) -> dict[str, ObjectId]:
    """The named bases (name -> base commit) whose checkpoint a commit reachable from ``tips`` records."""
    used = _base_trees(repo, tips)
    return {name: oid for name, oid in repo.bases().items() if repo.store.read_commit(oid).tree in used}


# -- clone, pull ---------------------------------------------------------------------


R = TypeVar("R", bound=RepoView)
CLONING = "CLONING"
"""A file in ``.dithub`` while a clone runs (it holds the URL): a clone killed or failed midway is
resumed by running it again (only missing objects travel)."""


def clone(url: str, directory: str | Path, make: Callable[[Path, str | None, str], R], *, name: str = "origin",
          options: dict[str, Any] | None = None, progress: ProgressFactory = no_progress) -> tuple[R, SyncResult]:
    """A repository at ``directory`` (new or empty, or a clone of the same URL that stopped midway:
    resumed) with every branch, tag and base of the remote at ``url``. ``make(directory, branch)``
    creates the repository with that first branch (``Repo.clone`` passes it), or opens it (None),
    naming objects by ``hash`` (the remote's)."""
    directory = Path(directory)
    marker = directory / ".dithub" / CLONING
    resuming = marker.is_file() and marker.read_text(errors="replace") == url
    if directory.exists() and any(directory.iterdir()) and not resuming:
        raise BadInput(f"{directory} exists and is not empty", "clone into a new directory")
    first = Location(url, name, options)
    heads = _valid_refs(first)
    if not heads:
        raise RemoteError(f"{url} holds no dithub repository (no refs)", "push to it first, or check the URL")
    branches = sorted(n[len(HEADS):] for n in heads if n.startswith(HEADS))
    repo = make(directory, None if resuming else ("main" if "main" in branches or not branches else branches[0]), first.hash.name)
    if not resuming:
        atomic_write(marker, url.encode())
        remote_add(repo, name, url, options)
    try:
        result = fetch(repo, name, with_base=True, progress=progress)
    except DithubError as exc:
        exc.hint = f"{exc.hint}; then " if exc.hint else ""
        exc.hint += f"run the same clone again: it resumes into {directory} (or delete it)"
        raise
    result.requests += first.fs.requests
    for b in branches:
        tracked = repo.refs.resolve(f"{REMOTES}{name}/{b}")
        if tracked is not None:  # (None: fetch skipped it, and said why)
            repo.refs.set_if_equals(HEADS + b, repo.refs.resolve(HEADS + b), tracked, f"clone {url}")
            set_upstream(repo, b, name)
    marker.unlink()
    return repo, result


def pull(repo: RepoView, remote: str | None = None, branch: str | None = None, *, method: str | None = None,
         params: Mapping[str, Any] | None = None, verify_signatures: bool = False,
         progress: ProgressFactory = no_progress) -> SyncResult:
    """Fetch the branch's upstream and fast-forward the branch to it; where the two have diverged,
    merge them with ``method`` (a commit whose parents are both heads), or refuse without one."""
    branch = target_branch(repo, branch, "name the branch to pull")
    up = upstream(repo, branch)
    remote_name, remote_branch = (remote, branch) if remote else (up or ("origin", branch))
    result = fetch(repo, remote_name, [remote_branch], verify_signatures=verify_signatures, progress=progress)
    theirs = repo.refs.resolve(f"{REMOTES}{remote_name}/{remote_branch}")
    mine = repo.refs.resolve(HEADS + branch)
    if theirs is None or theirs == mine:
        return result
    if mine is not None and not is_ancestor(repo.store, mine, theirs):
        if is_ancestor(repo.store, theirs, mine):
            return result  # already ahead
        tracking = f"{remote_name}/{remote_branch}"
        if method is None:
            raise RefConflict(f"{branch} and {tracking} have diverged",
                              f"pull with --method METHOD to merge them, or: dithub merge {branch} {tracking} --method METHOD --into {branch}")
        from .merge.verb import merge  # the merge engine: only for a pull that merges

        merged = merge(repo, [HEADS + branch, REMOTES + tracking], method, params, into=branch,
                       message=f"pull {tracking} into {branch} ({method})", progress=progress)
        result.refs[HEADS + branch] = (mine, merged)
        return result
    repo.refs.set_if_equals(HEADS + branch, mine, theirs, f"pull {remote_name}: fast-forward")
    result.refs[HEADS + branch] = (mine, theirs)
    return result


def fsck_repair(repo: RepoView, remote: str | None, progress: ProgressFactory = no_progress) -> FsckReport:
    """``fsck --repair``: damaged objects leave the store and, with the missing ones, are fetched
    again from ``remote`` (default: origin, or the only remote); the report is of the repaired
    repository, ``repaired`` listing what came back."""
    first = fsck(repo.store, repo.refs, progress, set_aside=True)
    remote = remote or (default_remote(repo) if repo.path is not None else None)
    wanted = [oid for oid, _why in first.corrupt] + [oid for oid, _why in first.missing]
    restored = restore(repo, remote, wanted, progress) if remote and wanted else []
    report = fsck(repo.store, repo.refs, progress) if restored else first
    report.repaired = restored
    return report
