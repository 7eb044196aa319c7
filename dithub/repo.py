"""``Repo``: the Python API. Orchestrates the store, refs, formats and history."""
from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import formats
from .ops import maintenance
from .ops.maintenance import FsckReport, GcReport
from .errors import BadInput, NotARepository, RefNotFound
from .store.history import LogEntry, expand_ref, resolve_rev, walk
from .progress import ProgressFactory, no_progress
from .store import (
    BaseObjectStore, BaseRefStore, Commit, DiskObjectStore, DiskRefStore, MemoryObjectStore,
    MemoryRefStore, ObjectId, Op, TensorData, TensorEntry, Tree, atomic_write, check_ref_name,
)
from .store.objects import tensor_parts

if TYPE_CHECKING:
    from .ops.rebase import RebaseResult
    from .verify import Policy, VerifyReport
    from .ops.diff import DiffResult
    from .ops.merge.run import MergePlan
    from .ops.sync import SyncResult

DIRNAME = ".dithub"
DEFAULT_BRANCH = "main"
HEADS, TAGS, BASES = "refs/heads/", "refs/tags/", "refs/bases/"


@dataclass(frozen=True)
class CommitResult:
    """What ``commit`` wrote."""

    id: ObjectId
    branch: str | None
    tree: ObjectId
    new_objects: int
    new_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Status:
    branch: str | None
    head: ObjectId | None
    commit: Commit | None
    kind: str | None
    base: str | None
    branches: int


@dataclass(frozen=True)
class ShowInfo:
    id: ObjectId
    commit: Commit
    tree: Tree
    base: str | None
    refs: list[str]


@dataclass
class _WriteStats:
    objects: int = 0
    bytes: int = 0


def default_author() -> str:
    """``DITHUB_AUTHOR``, else the login name."""
    env = os.environ.get("DITHUB_AUTHOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  no login name in some containers
        return "unknown"


class Repo:
    """A dithub repository: an object store plus refs (on disk or in memory)."""

    def __init__(self, store: BaseObjectStore, refs: BaseRefStore, path: Path | None = None) -> None:
        self.store = store
        self.refs = refs
        self.path = path

    # -- opening ----------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", branch: str = DEFAULT_BRANCH) -> Repo:
        """Create ``PATH/.dithub`` (an error if one exists)."""
        check_ref_name(branch, "branch")
        root = Path(path).resolve()
        meta = root / DIRNAME
        if meta.exists():
            raise BadInput(f"{meta} already exists", "open it with Repo(path), or choose another directory")
        for sub in ("objects", "refs/heads", "refs/tags", "refs/bases", "logs", "tmp"):
            (meta / sub).mkdir(parents=True, exist_ok=True)
        atomic_write(meta / "config.json", json.dumps({"format": 1}).encode())
        atomic_write(meta / "HEAD", f"ref: {HEADS}{branch}\n".encode())
        return cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".") -> Repo:
        """Open the repository at ``path`` or the nearest parent that has one."""
        start = Path(path).resolve()
        for d in (start, *start.parents):
            meta = d / DIRNAME
            if (meta / "HEAD").is_file():
                return cls(DiskObjectStore(meta / "objects", meta / "tmp"), DiskRefStore(meta), d)
        raise NotARepository(f"not a dithub repository: {start} (or any parent)", "run `dithub init` first")

    @classmethod
    def memory(cls, branch: str = DEFAULT_BRANCH) -> Repo:
        """A repository held in memory (tests, scratch work)."""
        refs = MemoryRefStore()
        refs.set_symbolic("HEAD", HEADS + branch)
        return cls(MemoryObjectStore(), refs)

    # -- names ------------------------------------------------------------
    def resolve(self, rev: str) -> ObjectId:
        """The commit id a revision names (branch, tag, base, id, ``~N``)."""
        return resolve_rev(self.store, self.refs, rev)

    def current_branch(self) -> str | None:
        """The branch HEAD is on (short name), or None when detached."""
        target = self.refs.follow("HEAD")
        return target[len(HEADS) :] if target.startswith(HEADS) else None

    def head(self) -> ObjectId | None:
        return self.refs.resolve("HEAD")

    def branches(self) -> dict[str, ObjectId]:
        return {n[len(HEADS) :]: o for n, o in self.refs.as_dict(HEADS).items()}

    def tags(self) -> dict[str, ObjectId]:
        return {n[len(TAGS) :]: o for n, o in self.refs.as_dict(TAGS).items()}

    def bases(self) -> dict[str, ObjectId]:
        """Named base checkpoints: name -> commit id (its tree is ``full``)."""
        return {n[len(BASES) :]: o for n, o in self.refs.as_dict(BASES).items()}

    # -- objects ----------------------------------------------------------
    def commit_object(self, rev: str) -> Commit:
        return self.store.read_commit(self.resolve(rev))

    def tree_of(self, rev: str) -> Tree:
        return self.store.read_tree(self.commit_object(rev).tree)

    def loader(self, tree: Tree) -> Callable[[str], TensorData]:
        """Read a tree's tensors by name (zero-copy, verified)."""
        return lambda name: self.store.read_tensor(tree.tensors[name].id)

    def base_name(self, base_tree_id: ObjectId | None) -> str | None:
        """The name a base tree is registered under, if any."""
        if base_tree_id is None:
            return None
        for name, oid in self.bases().items():
            if self.store.read_commit(oid).tree == base_tree_id:
                return name
        return base_tree_id[:12]

    # -- writing ----------------------------------------------------------
    def _store_staged(self, staged: formats.Staged, progress: ProgressFactory) -> tuple[ObjectId, _WriteStats]:
        stats = _WriteStats()
        advance = progress(f"storing {staged.source.name}", staged.nbytes)
        entries = {}

        def done(name: str, oid: ObjectId, new: bool) -> None:
            t = staged.tensors[name]
            if new:
                stats.objects += 1
                stats.bytes += self.store.size(oid)
            entries[name] = TensorEntry(oid, t.dtype, t.shape)
            staged.release(name)
            advance(t.nbytes)

        self.store.put_many(((n, tensor_parts(t.dtype, t.shape, t.data)) for n, t in staged.tensors.items()), done)
        tree_oid, new = self.store.put([Tree(staged.kind, staged.config, entries).encode()])
        if new:
            stats.objects += 1
            stats.bytes += self.store.size(tree_oid)
        return tree_oid, stats

    def commit_tree(
        self, tree: ObjectId, message: str, *, branch: str | None = None, parents: list[ObjectId] | None = None,
        base: ObjectId | None = None, op: Op | None = None, author: str | None = None,
        expected: ObjectId | None | str = "read",
    ) -> ObjectId:
        """Write a commit of a stored tree and advance ``branch`` (or HEAD) to it.

        The ref moves only if it still holds ``expected`` (by default, its value
        when this call starts); ``parents`` default to that value.
        """
        ref = HEADS + branch if branch else "HEAD"
        if branch:
            check_ref_name(branch, "branch")
        old = self.refs.resolve(ref) if expected == "read" else expected
        if parents is None:
            parents = [old] if old else []
        who = author or default_author()
        op = op or Op()
        commit = Commit(tree, parents, base, who, time.time(), message, op)
        oid = self.store.write_commit(commit)
        self.store.sync()
        self.refs.set_if_equals(ref, old, oid, f"{op.name}: {message.splitlines()[0] if message else ''}", who)
        return oid

    def commit(
        self, path: str | os.PathLike[str], message: str, *, branch: str | None = None, base: str | None = None,
        author: str | None = None, allow_empty: bool = False, progress: ProgressFactory = no_progress,
    ) -> CommitResult:
        """Import an adapter (peft dir or safetensors file) as a new commit."""
        if not message.strip():
            raise BadInput("empty commit message", "pass -m MESSAGE")
        if branch:
            check_ref_name(branch, "branch")
        elif self.current_branch() is None:
            raise BadInput("HEAD is detached", "pass -b BRANCH to say which branch to commit on")
        staged = formats.import_adapter(Path(path))
        ref = HEADS + (branch or self.current_branch() or DEFAULT_BRANCH)
        ref_old = self.refs.resolve(ref)
        parent = ref_old or (self.head() if branch else None)
        base_tree = self._base_for(base, parent)
        if base_tree is not None:
            formats.check_fits(self.store.read_tree(base_tree), staged)
        tree_oid, stats = self._store_staged(staged, progress)
        if parent and not allow_empty and self.store.read_commit(parent).tree == tree_oid:
            raise BadInput(f"nothing to commit: {path} is identical to {ref[len(HEADS):]}'s head", "use --allow-empty to commit anyway")
        oid = self.commit_tree(tree_oid, message, branch=ref[len(HEADS) :], parents=[parent] if parent else [],
                               base=base_tree, author=author, expected=ref_old)
        stats.objects += 1
        stats.bytes += self.store.size(oid)
        return CommitResult(oid, ref[len(HEADS) :], tree_oid, stats.objects, stats.bytes, staged.nbytes)

    def _base_for(self, base: str | None, parent: ObjectId | None) -> ObjectId | None:
        if base is None:
            return self.store.read_commit(parent).base if parent else None
        bases = self.bases()
        if base not in bases:
            known = ", ".join(sorted(bases)) or "none yet"
            raise RefNotFound(f"base {base!r} does not exist (known: {known})", f"add it with `dithub base add {base} MODEL_DIR`")
        return self.store.read_commit(bases[base]).tree

    def base_add(self, name: str, path: str | os.PathLike[str], *, message: str | None = None,
                 progress: ProgressFactory = no_progress) -> CommitResult:
        """Register a Hugging Face model directory as base checkpoint ``name``."""
        check_ref_name(name, "base")
        ref = BASES + name
        old = self.refs.resolve(ref)
        staged = formats.import_model_dir(Path(path))
        tree_oid, stats = self._store_staged(staged, progress)
        commit = Commit(tree_oid, [old] if old else [], None, default_author(), time.time(),
                        message or f"base {name} from {Path(path).name}", Op("base"))
        oid = self.store.write_commit(commit)
        self.store.sync()
        self.refs.set_if_equals(ref, old, oid, f"base add: {name}", commit.author)
        return CommitResult(oid, None, tree_oid, stats.objects + 1, stats.bytes, staged.nbytes)

    # -- refs -------------------------------------------------------------
    def _create_ref(self, ref: str, what: str, name: str, rev: str, force: bool) -> ObjectId:
        check_ref_name(name, what)
        oid = self.resolve(rev)
        old = self.refs.resolve(ref)
        if old is not None and not force:
            raise BadInput(f"{what} {name!r} already exists", "use -f to move it, or choose another name")
        self.refs.set_if_equals(ref, old, oid, f"{what}: created from {rev}")
        return oid

    def create_branch(self, name: str, start: str = "HEAD", force: bool = False) -> ObjectId:
        if force and name == self.current_branch():
            raise BadInput(f"cannot force-move {name!r}: it is the current branch")
        return self._create_ref(HEADS + name, "branch", name, start, force)

    def delete_branch(self, name: str) -> ObjectId:
        oid = self._existing(HEADS, name, "branch")
        if name == self.current_branch():
            raise BadInput(f"cannot delete branch {name!r}: HEAD is on it", "checkout another branch first")
        self.refs.delete(HEADS + name, oid)
        return oid

    def rename_branch(self, old: str, new: str) -> None:
        oid = self._existing(HEADS, old, "branch")
        self._create_ref(HEADS + new, "branch", new, oid, force=False)
        if self.current_branch() == old:
            self.refs.set_symbolic("HEAD", HEADS + new)
        self.refs.delete(HEADS + old, oid)

    def tag(self, name: str, rev: str = "HEAD", force: bool = False) -> ObjectId:
        return self._create_ref(TAGS + name, "tag", name, rev, force)

    def delete_tag(self, name: str) -> ObjectId:
        oid = self._existing(TAGS, name, "tag")
        self.refs.delete(TAGS + name, oid)
        return oid

    def _existing(self, prefix: str, name: str, what: str) -> ObjectId:
        oid = self.refs.resolve(prefix + name)
        if oid is None:
            raise RefNotFound(f"{what} {name!r} does not exist", f"list them with `dithub {what}`")
        return oid

    def checkout(self, rev: str) -> ObjectId:
        """Move HEAD: onto a branch (symbolic) or to a commit (detached)."""
        if rev in self.branches():
            self.refs.set_symbolic("HEAD", HEADS + rev)
            return self.branches()[rev]
        oid = self.resolve(rev)
        self.refs.set_detached("HEAD", oid, f"checkout: moving to {rev}")
        return oid

    # -- reading ----------------------------------------------------------
    def log(self, revs: list[str] | None = None, limit: int | None = None) -> list[LogEntry]:
        starts = [self.resolve(r) for r in (revs or ["HEAD"])]
        return list(walk(self.store, starts, limit))

    def ref_names_by_commit(self) -> dict[ObjectId, list[str]]:
        """Short ref names pointing at each commit (for decorations)."""
        out: dict[ObjectId, list[str]] = {}
        for full, oid in self.refs.as_dict("refs/").items():
            out.setdefault(oid, []).append(full.split("/", 2)[2] if full.count("/") >= 2 else full)
        return out

    def status(self) -> Status:
        head = self.head()
        commit = self.store.read_commit(head) if head else None
        kind = self.store.read_tree(commit.tree).kind if commit else None
        return Status(self.current_branch(), head, commit, kind, self.base_name(commit.base) if commit else None,
                      len(self.branches()))

    # -- writing files ----------------------------------------------------
    def export(self, rev: str, out: str | os.PathLike[str], *, progress: ProgressFactory = no_progress) -> Path:
        """Write the adapter (or checkpoint) at ``rev`` in its own format."""
        return self._write_out(self.tree_of(rev), out, progress)

    def _write_out(self, tree: Tree, out: str | os.PathLike[str], progress: ProgressFactory) -> Path:
        """Stream a stored tree to disk in its own format (verified chunk by chunk)."""
        chunks = lambda name: self.store.iter_tensor_bytes(tree.tensors[name].id)  # noqa: E731
        return formats.write_tree(Path(out), tree, chunks, progress(f"writing {out}", tree.nbytes))

    def export_merged(self, rev: str, base: str | None, out: str | os.PathLike[str], *,
                      progress: ProgressFactory = no_progress) -> Path:
        """Full weights of ``rev``'s base with the adapter folded in."""
        commit = self.commit_object(rev)
        base_oid = self._base_for(base, None) if base else commit.base
        if base_oid is None:
            raise BadInput(f"{rev} records no base checkpoint", "pass --merge-into BASE (see `dithub base list`)")
        base_tree = self.store.read_tree(base_oid)
        adapter = self.store.read_tree(commit.tree)
        if adapter.kind == "full":
            raise BadInput(f"{rev} is a full checkpoint, not an adapter", "export it without --merge-into")
        return formats.write_merged_model(Path(out), base_tree, self.loader(base_tree), adapter,
                                          self.loader(adapter), progress(f"writing {out}", base_tree.nbytes))

    def reflog(self, ref: str = "HEAD") -> list:
        full = expand_ref(self.refs, ref)
        if full is None:
            raise RefNotFound(f"unknown ref {ref!r}")
        return self.refs.reflog(full)

    def show(self, rev: str) -> ShowInfo:
        oid = self.resolve(rev)
        commit = self.store.read_commit(oid)
        return ShowInfo(oid, commit, self.store.read_tree(commit.tree), self.base_name(commit.base),
                        self.ref_names_by_commit().get(oid, []))

    def diff(self, a: str, b: str) -> DiffResult:
        """Per-tensor (and per-LoRA-module) differences from ``a`` to ``b``."""
        from .ops.diff import diff_trees  # torch: imported only when needed

        ca, cb = self.commit_object(a), self.commit_object(b)
        ta, tb = self.store.read_tree(ca.tree), self.store.read_tree(cb.tree)
        return diff_trees(self.resolve(a), ta, self.loader(ta), self.resolve(b), tb, self.loader(tb))

    # -- merging ----------------------------------------------------------
    def plan_merge(self, revs: list[str], method: str, params: dict | None = None) -> MergePlan:
        """Check and plan a merge (what ``merge --dry-run`` prints); writes nothing."""
        from .ops.merge.run import plan_merge

        return plan_merge(self, revs, method, params)

    def merge(
        self, revs: list[str], method: str, params: dict | None = None, *, into: str | None = None,
        message: str | None = None, author: str | None = None, progress: ProgressFactory = no_progress,
        probe: str | None = None, metric: str = "accuracy", device: str = "auto",
    ) -> ObjectId:
        """Merge ``revs`` with ``method`` into a new commit on ``into`` (default: the current branch).

        With ``probe``, the method's final scale is chosen by ``sweep_alpha`` on that probe set
        (by ``metric``: accuracy, or ``module:function(model, probe) -> float``); the
        merge then runs once more at that scale, so the commit equals a replay of its ``op`` bit for bit.
        """
        from dataclasses import replace

        from .algorithms.merge import get_method
        from .ops.merge.run import run_merge, sweep_alpha

        branch = into or self.current_branch()
        if branch is None:
            raise BadInput("HEAD is detached", "pass --into BRANCH")
        check_ref_name(branch, "branch")
        if method == "opcm":  # sequential: each input joins the running merge in its own commit
            from .ops.merge.sequential import opcm_merge

            if params and "weights" in params:
                raise BadInput("opcm takes no per-input weights (its paper defines none)", "drop --weight")

            oid = ""
            for rev in revs:
                oid = opcm_merge(self, rev, branch, params, message=message, author=author, progress=progress)
            return oid
        plan = self.plan_merge(revs, method, params)
        note = ""
        if probe is not None:
            best, accuracies = sweep_alpha(self, plan, probe, metric)
            scale = get_method(method).scale_for(plan.params)
            plan = replace(plan, params={**plan.params, scale: best})
            note = f"\n\n{scale} = {best} chosen on {probe} by {metric}: " + ", ".join(f"{a}: {acc:.3f}" for a, acc in accuracies.items())
        previous = self.refs.resolve(HEADS + branch)
        report: dict = {}
        tree = run_merge(self, plan, progress, device, report=report)
        parents = ([previous] if previous and previous not in plan.inputs else []) + plan.inputs
        text = (message or f"merge {', '.join(revs)} with {method}") + note
        op = replace(plan.op, params={**plan.op.params, **report})  # and what a rank cap dropped
        return self.commit_tree(tree, text, branch=branch, parents=parents, base=plan.base, op=op,
                                author=author, expected=previous)

    def compose(self, revs: list[str], out: str | os.PathLike[str], method: str = "mean_ba",
                params: dict | None = None, *, progress: ProgressFactory = no_progress) -> Path:
        """Write the merge of ``revs`` to ``out`` without a commit (DitHub's per-query composition).

        The merged objects are stored but no ref points at them; ``gc`` removes them later.
        """
        from .ops.merge.run import run_merge

        tree_id = run_merge(self, self.plan_merge(revs, method, params), progress)
        return self._write_out(self.store.read_tree(tree_id), out, progress)

    def describe(self, oid: ObjectId) -> str:
        """A commit's name for messages: the branches at it, else its short id."""
        heads = sorted(b for b, o in self.branches().items() if o == oid)
        return " / ".join(heads) if heads else oid[:12]

    def revert(
        self, rev: str, *, from_merge: str | None = None, method: str = "exact", alpha: float | str | None = None,
        probe: str | None = None, force: bool = False, margin: float | None = None, branch: str | None = None,
        message: str | None = None, author: str | None = None,
    ) -> ObjectId:
        """Undo commit ``rev``, or (``from_merge``) remove input ``rev`` from that merge, as a new
        commit on ``branch`` (default: the current one); see ``dithub.ops.revert``."""
        from .ops.revert import DEFAULT_MARGIN, revert_input, undo_tree

        branch = branch or self.current_branch()
        if branch is None:
            raise BadInput("HEAD is detached", "pass --into BRANCH")
        check_ref_name(branch, "branch")
        head = self.refs.resolve(HEADS + branch)
        oid = self.resolve(rev)
        who = author or default_author()
        if from_merge is None:
            if method != "exact" or alpha is not None or probe is not None or force:
                raise BadInput("--method, --alpha, --probe and --force apply to removing an input", "pass --from MERGE")
            if head is None:
                raise BadInput(f"branch {branch!r} has no commits to revert on")
            tree = undo_tree(self, oid, head)
            base = self.store.read_commit(self.store.read_commit(oid).parents[0] if head == oid else head).base
            op = Op("revert", None, {"reverted": oid}, [oid])
            text = message or f"Revert {self.describe(oid)}: {self.store.read_commit(oid).message.splitlines()[0]}\n\nThis reverts commit {oid}."
        else:
            merge_id = self.resolve(from_merge)
            names = (rev, from_merge)
            tree, params = revert_input(self, oid, merge_id, method, alpha=alpha, probe=probe, force=force,
                                        margin=DEFAULT_MARGIN if margin is None else margin, author=who, names=names)
            base = self.store.read_commit(merge_id).base
            op = Op("revert", method, params, [merge_id, oid])
            text = message or f"revert: remove {rev} from {from_merge} ({method})"
        return self.commit_tree(tree, text, branch=branch, parents=[head] if head else [], base=base, op=op,
                                author=who, expected=head)

    def rebase(
        self, onto: str, branch: str | None = None, method: str = "transfusion", params: dict | None = None, *,
        all_branches: bool = False, tip_only: bool = False, alpha: float | str = 1.0, probe: str | None = None,
        author: str | None = None, progress: ProgressFactory = no_progress,
    ) -> list[RebaseResult]:
        """Move ``branch`` (default: the current one; with ``all_branches``, every branch whose head
        is on another base) onto base ``onto`` with a rebase method; see ``dithub.ops.rebase``."""
        from .ops.rebase import rebase

        if all_branches:
            if branch is not None:
                raise BadInput("give a branch or --all, not both")
            new_tree = self.store.read_commit(self.bases()[onto]).tree if onto in self.bases() else None
            branches = [b for b, oid in sorted(self.branches().items())
                        if (c := self.store.read_commit(oid)).base is not None and c.base != new_tree]
            if not branches:
                raise BadInput(f"no branch has a head on a base other than {onto!r}", "nothing to rebase")
        else:
            branch = branch or self.current_branch()
            if branch is None:
                raise BadInput("HEAD is detached", "name the BRANCH to rebase")
            branches = [branch]
        return rebase(self, onto, branches, method, params, alpha=alpha, probe=probe, tip_only=tip_only,
                      author=author or default_author(), progress=progress)

    # -- maintenance ------------------------------------------------------
    def verify(self, rev: str = "HEAD", *, policy: str | Path | Policy | None = None, against: list[str] | None = None,
               checks: list[str] | None = None, allow_code: bool = False, progress: ProgressFactory = no_progress) -> VerifyReport:
        """Run the verify checks on ``rev`` with a policy (a ``dithub.toml`` path, a Policy, or
        None: ``dithub.toml`` at the repository root if present, else the defaults); see ``dithub.verify``.
        ``allow_code``: a policy file may name probe/metric functions (``module:function``)."""
        from .verify import Policy, load_policy, verify

        if not isinstance(policy, Policy):
            default = self.path / "dithub.toml" if self.path is not None else None
            policy = load_policy(policy if policy is not None else (default if default is not None and default.is_file() else None),
                                 allow_code=allow_code)
        return verify(self, rev, policy, against=against, checks=checks, progress=progress)

    @classmethod
    def clone(cls, url: str, directory: str | Path, *, name: str = "origin", options: dict[str, Any] | None = None,
              progress: ProgressFactory = no_progress) -> tuple[Repo, SyncResult]:
        """A new repository at ``directory`` with every branch, tag and base of the remote at ``url``
        (named ``name``); a clone of the same URL that stopped midway is resumed."""
        from .ops.sync import clone_into, prepare_clone

        plan = prepare_clone(url, directory, name=name, options=options)
        repo = cls.open(plan.directory) if plan.resuming else cls.init(plan.directory, branch=plan.first_branch)
        return repo, clone_into(repo, plan, progress)

    def fsck(self, *, repair: bool = False, remote: str | None = None, progress: ProgressFactory = no_progress) -> FsckReport:
        """Re-hash every object and check connectivity. ``repair``: damaged objects leave the store
        and, with the missing ones, are fetched again from ``remote`` (default: origin, or the only
        remote); the report is of the repaired repository, ``repaired`` listing what came back."""
        if not repair:
            return maintenance.fsck(self.store, self.refs, progress)
        from .ops.sync import default_remote, restore

        first = maintenance.fsck(self.store, self.refs, progress, set_aside=True)
        remote = remote or (default_remote(self) if self.path is not None else None)
        wanted = [oid for oid, _why in first.corrupt] + [oid for oid, _why in first.missing]
        restored = restore(self, remote, wanted, progress) if remote and wanted else []
        report = maintenance.fsck(self.store, self.refs, progress) if restored else first
        report.repaired = restored
        return report

    def gc(self, *, grace_seconds: float = 3600.0) -> GcReport:
        return maintenance.gc(self.store, self.refs, grace_seconds)


__all__ = ["Repo", "CommitResult", "Status", "ShowInfo", "FsckReport", "GcReport"]
