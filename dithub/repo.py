"""``Repo``: the Python API — a thin facade. It opens (or creates) a repository, resolves names, and
hands each verb to its operation in ``dithub.ops`` (which take any ``RepoView``)."""
from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInput, NotARepository, RefNotFound
from .ops import branches as branch_ops
from .ops import maintenance
from .ops.commit import DEFAULT_BRANCH, CommitResult, base_add, commit, commit_tree
from .ops.identity import default_author
from .ops.maintenance import FsckReport, GcReport
from .progress import ProgressFactory, no_progress
from .store import (
    DEFAULT_HASH, HASHES, BaseObjectStore, BaseRefStore, Commit, DiskObjectStore, DiskRefStore, MemoryObjectStore,
    MemoryRefStore, ObjectId, TensorData, Tree, atomic_write, check_ref_name, hash_named, repo_hash,
)
from .store.history import LogEntry, expand_ref, resolve_rev, walk
from .store.refs import BASES, HEADS, TAGS

if TYPE_CHECKING:
    from .ops.bisect import BisectResult, Step
    from .ops.blame import BlameLine
    from .ops.objects import ObjectView
    from .ops.rebase import RebaseResult
    from .verify import Policy, VerifyReport
    from .ops.diff import DiffResult
    from .ops.extract import Extracted
    from .ops.merge.plan import MergePlan
    from .ops.migrate import MigrateReport
    from .ops.sign import SignatureCheck
    from .ops.sync import SyncResult

DIRNAME = ".dithub"


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



class Repo:
    """A dithub repository: an object store plus refs (on disk or in memory)."""

    def __init__(self, store: BaseObjectStore, refs: BaseRefStore, path: Path | None = None) -> None:
        self.store = store
        self.refs = refs
        self.path = path
        self.signer: object | None = None
        """The private key commits are signed with while inside ``signing`` (None: unsigned)."""

    @contextlib.contextmanager
    def signing(self, key: str | os.PathLike[str] | None = None) -> Iterator[None]:
        """Sign every commit written inside: commit, merge, rebase, revert, class edits (``key``: a
        private SSH key file; None: ``user.signingkey`` from the config); see ``ops.sign``."""
        from .ops.sign import signing_key

        previous, self.signer = self.signer, signing_key(self, str(key) if key is not None else None)
        try:
            yield
        finally:
            self.signer = previous

    def config(self, key: str, value: str | None = None, *, unset: bool = False) -> str | None:
        """A setting (``user.signingkey``, ``signing.allowedsigners``): its value, or set it to
        ``value`` (``unset``: remove it); see ``ops.sign``."""
        from .ops.sign import get_setting, set_setting

        if value is not None or unset:
            set_setting(self, key, None if unset else value)
        return get_setting(self, key)

    def signature(self, rev: str, allowed_signers: str | None = None) -> SignatureCheck:
        """Whether commit ``rev`` is signed, and by whom among the allowed signers (``allowed_signers``,
        else ``signing.allowedsigners``); see ``ops.sign.check_commit``."""
        return self.signatures([rev], allowed_signers)[rev]

    def signatures(self, revs: list[str], allowed_signers: str | None = None) -> dict[str, SignatureCheck]:
        """``signature`` of each revision, the allowed signers read once."""
        from .ops.sign import check_commit, repo_signers

        signers = repo_signers(self, allowed_signers)
        return {rev: check_commit(self.commit_object(rev), signers) for rev in revs}

    # -- opening ----------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", branch: str = DEFAULT_BRANCH, hash: str = DEFAULT_HASH.name) -> Repo:
        """Create ``PATH/.dithub`` (an error if one exists), naming objects by ``hash`` (``blake3``,
        the default, or ``xxh3``: the fast legacy format; see ``store.ids``)."""
        check_ref_name(branch, "branch")
        if hash not in HASHES:
            raise BadInput(f"--hash {hash!r} is not an object hash", f"choose one of {', '.join(HASHES)}")
        root = Path(path).resolve()
        meta = root / DIRNAME
        if meta.exists():
            raise BadInput(f"{meta} already exists", "open it with Repo(path), or choose another directory")
        for sub in ("objects", "refs/heads", "refs/tags", "refs/bases", "logs", "tmp"):
            (meta / sub).mkdir(parents=True, exist_ok=True)
        atomic_write(meta / "config.json", json.dumps({"format": 1, "hash": hash}).encode())
        atomic_write(meta / "HEAD", f"ref: {HEADS}{branch}\n".encode())
        return cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".") -> Repo:
        """Open the repository at ``path`` or the nearest parent that has one."""
        start = Path(path).resolve()
        for d in (start, *start.parents):
            meta = d / DIRNAME
            if (meta / "HEAD").is_file() or (meta / "migrate" / "READY").is_file():
                from .ops.migrate import finish_migration

                finish_migration(meta)  # a migration a crash interrupted mid-switch: finish it first
                return cls(DiskObjectStore(meta / "objects", meta / "tmp", repo_hash(meta)), DiskRefStore(meta), d)
        raise NotARepository(f"not a dithub repository: {start} (or any parent)", "run `dithub init` first")

    @classmethod
    def memory(cls, branch: str = DEFAULT_BRANCH, hash: str = DEFAULT_HASH.name) -> Repo:
        """A repository held in memory (tests, scratch work)."""
        refs = MemoryRefStore()
        refs.set_symbolic("HEAD", HEADS + branch)
        return cls(MemoryObjectStore(hash_named(hash)), refs)

    def opener(self) -> Callable[[], Repo]:
        """A picklable function opening this repository again, for worker processes (``--executor ray``)."""
        if self.path is None:
            raise BadInput("an in-memory repository cannot be shared with worker processes", "use a repository on disk")
        return functools.partial(Repo.open, self.path)

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

    def describe(self, oid: ObjectId) -> str:
        """A commit's name for messages: the branches at it, else its short id."""
        heads = sorted(b for b, o in self.branches().items() if o == oid)
        return " / ".join(heads) if heads else oid[:12]

    def ref_names_by_commit(self) -> dict[ObjectId, list[str]]:
        """Short ref names pointing at each commit (for decorations)."""
        out: dict[ObjectId, list[str]] = {}
        for full, oid in self.refs.as_dict("refs/").items():
            out.setdefault(self.store.peel(oid), []).append(full.split("/", 2)[2] if full.count("/") >= 2 else full)
        return out

    # -- writing history (dithub.ops.commit) -----------------------------------
    def commit(self, path: str | os.PathLike[str], message: str, *, branch: str | None = None, base: str | None = None,
               author: str | None = None, allow_empty: bool = False, progress: ProgressFactory = no_progress) -> CommitResult:
        """Import an adapter (peft dir or safetensors file) or a fine-tuned model directory as a new
        commit; ``path`` may be ``hf://org/name[@revision]``."""
        return commit(self, path, message, branch=branch, base=base, author=author, allow_empty=allow_empty, progress=progress)

    def commit_tree(self, tree: ObjectId, message: str, **how: Any) -> ObjectId:
        """Write a commit of a stored tree and advance a branch (or HEAD) by compare-and-swap; see ``ops.commit``."""
        return commit_tree(self, tree, message, **how)

    def base_add(self, name: str, path: str | os.PathLike[str], *, message: str | None = None,
                 progress: ProgressFactory = no_progress) -> CommitResult:
        """Register a Hugging Face model directory as base checkpoint ``name``."""
        return base_add(self, name, path, message=message, progress=progress)

    # -- refs (dithub.ops.branches) --------------------------------------------
    def create_branch(self, name: str, start: str = "HEAD", force: bool = False) -> ObjectId:
        return branch_ops.create_branch(self, name, start, force)

    def delete_branch(self, name: str) -> ObjectId:
        return branch_ops.delete_branch(self, name)

    def rename_branch(self, old: str, new: str) -> None:
        branch_ops.rename_branch(self, old, new)

    def tag(self, name: str, rev: str = "HEAD", force: bool = False, message: str | None = None) -> ObjectId:
        """Tag ``rev``: lightweight, or (a ``message``, or inside ``signing``) an annotated tag object."""
        return branch_ops.tag(self, name, rev, force, message)

    def tag_signature(self, name: str, allowed_signers: str | None = None) -> SignatureCheck:
        """Whether tag ``name`` is an annotated tag with a good signature (a lightweight tag is unsigned)."""
        from .ops.sign import SignatureCheck, check_commit, repo_signers

        oid = branch_ops.existing(self, TAGS, name, "tag")
        if self.store.peel(oid) == oid:
            return SignatureCheck("unsigned", detail="a lightweight tag")
        return check_commit(self.store.read_tag(oid), repo_signers(self, allowed_signers))

    def delete_tag(self, name: str) -> ObjectId:
        return branch_ops.delete_tag(self, name)

    def checkout(self, rev: str) -> ObjectId:
        """Move HEAD: onto a branch (symbolic) or to a commit (detached)."""
        return branch_ops.checkout(self, rev)

    def class_branches(self, classes: list[str], prefix: str = "class/") -> tuple[list[str], list[str]]:
        """(the branches ``prefix + class`` that exist, the classes without one); see ``ops.branches``."""
        return branch_ops.class_branches(self, classes, prefix)

    def reset(self, rev: str, *, author: str | None = None) -> tuple[str | None, ObjectId | None, ObjectId]:
        """Move the current branch (or a detached HEAD) to ``rev``; ``ORIG_HEAD`` keeps the old head."""
        return branch_ops.reset(self, rev, author or default_author())

    # -- reading ---------------------------------------------------------------
    def object(self, text: str) -> ObjectView:
        """Any stored object by id (or a revision's commit), parsed; see ``ops.objects``."""
        from .ops.objects import view

        return view(self, text)

    def blame(self, rev: str = "HEAD") -> list[BlameLine]:
        """For each tensor (or LoRA module) of ``rev``, the commit that last changed it (first parents)."""
        from .ops.blame import blame  # numpy: imported only when needed

        return blame(self, rev)

    def bisect(self, good: str, bad: str, *, probe: str | None = None, metric: str = "accuracy", min_score: float | None = None,
               max_drop: float | None = None, run: str | None = None, on_step: Callable[[Step], None] = lambda s: None) -> BisectResult:
        """The first bad commit between ``good`` and ``bad`` (first parents), by a probe's score against a
        threshold or by a command (``run``: exit 0 good, 125 skip, else bad); see ``ops.bisect``."""
        from .ops import bisect as search  # torch, for a probe: imported only when needed

        if (probe is None) == (run is None):
            raise BadInput("bisect tests each commit with a probe or a command", "pass --probe FILE with a threshold, or --run CMD")
        test = (search.command_test(self, run) if run is not None else
                search.probe_test(self, probe or "", metric, min_score=min_score, max_drop=max_drop, reference=self.resolve(good)))
        return search.bisect(self, good, bad, test, on_step)

    def log(self, revs: list[str] | None = None, limit: int | None = None) -> list[LogEntry]:
        return list(walk(self.store, [self.resolve(r) for r in (revs or ["HEAD"])], limit))

    def status(self) -> Status:
        head = self.head()
        commit = self.store.read_commit(head) if head else None
        kind = self.store.read_tree(commit.tree).kind if commit else None
        return Status(self.current_branch(), head, commit, kind, self.base_name(commit.base) if commit else None,
                      len(self.branches()))

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
        from .ops.diff import diff_trees  # numpy: imported only when needed

        ta, tb = self.tree_of(a), self.tree_of(b)
        return diff_trees(self.resolve(a), ta, self.loader(ta), self.resolve(b), tb, self.loader(tb))

    # -- writing files (dithub.ops.export) ---------------------------------------
    def export(self, rev: str, out: str | os.PathLike[str], *, card: bool = False,
               progress: ProgressFactory = no_progress) -> Path:
        """Write the adapter (or checkpoint) at ``rev`` in its own format, with a model card (README.md)
        where none was committed (``card``: in place of the committed one)."""
        from .ops.export import export

        return export(self, rev, Path(out), progress, card=card)

    def sign_model(self, path: str | os.PathLike[str], private_key: str | os.PathLike[str],
                   signature: str | os.PathLike[str] | None = None) -> Path:
        """An OpenSSF model signature of an exported model (``signature``: default PATH.sig beside
        it), verifiable outside dithub; see ``formats.openssf``."""
        from .formats.openssf import sign_model

        path = Path(path)
        return sign_model(path, Path(private_key), Path(signature) if signature else path.with_name(path.name + ".sig"))

    def export_merged(self, rev: str, base: str | None, out: str | os.PathLike[str], *, max_shard_size: int | str = "5GB",
                      progress: ProgressFactory = no_progress) -> Path:
        """Full weights of ``rev``'s base (or of ``base``: a model directory, a dithub revision or
        ``hf://org/name``) with the adapter folded in, sharded as ``save_pretrained`` shards."""
        from .ops.export import export_merged

        return export_merged(self, rev, base, Path(out), progress, max_shard_size=max_shard_size)

    def extract(self, rev: str, rank: int, out: str | os.PathLike[str], *, progress: ProgressFactory = no_progress) -> Extracted:
        """A rank-``rank`` LoRA adapter (peft directory) of ``rev``'s update on its base, by truncated
        SVD of each linear layer's ΔW; see ``ops.extract``."""
        from .ops.extract import extract

        return extract(self, rev, rank, Path(out), progress)

    # -- merge, revert, rebase (dithub.ops) ----------------------------------------
    def plan_merge(self, revs: list[str], method: str, params: Mapping[str, Any] | None = None) -> MergePlan:
        """Check and plan a merge (what ``merge --dry-run`` prints); writes nothing."""
        from .ops.merge.plan import plan_merge

        return plan_merge(self, revs, method, params)

    def merge(self, revs: list[str], method: str, params: Mapping[str, Any] | None = None, *, into: str | None = None,
              message: str | None = None, author: str | None = None, progress: ProgressFactory = no_progress,
              probe: str | None = None, metric: str = "accuracy", device: str = "auto", executor: str = "local",
              remote: str | None = None, probes: Sequence[str] = (), defense: Mapping[str, Any] | None = None) -> ObjectId:
        """Merge ``revs`` with ``method`` into a new commit on ``into`` (default: the current branch),
        its final scale chosen on ``probe`` by ``metric`` if given (``probes``: an activation method's
        data, and ``defense``, see ``ops.merge.verb.merge``); ``executor``: ``local``, ``ray`` or
        ``ray=ADDRESS`` (see ``ops.executor``); see ``ops.merge.verb.merge``. ``remote``: run against
        that remote, the store of record (``revs`` and ``into`` its branches; see ``ops.on_remote``)."""
        from .ops.executor import executor_for
        from .ops.merge.verb import merge

        if remote is not None:
            from .ops.on_remote import merge_on_remote

            if probe is not None or probes or defense:
                raise BadInput("probe sets and defence vectors are read on this machine: --alpha auto, activation merges and "
                               "--defend do not run against a remote",
                               "drop --remote")
            return merge_on_remote(self, remote, revs, method, params, into=into or "", message=message, author=author,
                                   executor=executor_for(executor), progress=progress)[0]

        return merge(self, revs, method, params, into=into, message=message, author=author, progress=progress,
                     probe=probe, metric=metric, device=device, executor=executor_for(executor), probes=probes,
                     defense=defense)

    def merge_recipe(self, recipe: str | os.PathLike[str], *, into: str | None = None, message: str | None = None,
                     author: str | None = None, progress: ProgressFactory = no_progress, device: str = "auto") -> ObjectId:
        """Merge as a mergekit recipe (YAML) says; see ``ops.merge.recipe``."""
        from .ops.merge.recipe import from_recipe, read_recipe
        from .ops.merge.verb import merge

        revs, method, params = from_recipe(self, read_recipe(Path(recipe)))
        return merge(self, revs, method, params, into=into, message=message or f"merge as {Path(recipe).name} says",
                     author=author, progress=progress, device=device)

    def recipe(self, rev: str) -> dict[str, Any]:
        """Merge commit ``rev`` as a mergekit recipe; see ``ops.merge.recipe.to_recipe``."""
        from .ops.merge.recipe import to_recipe

        def name(oid: ObjectId) -> str:
            heads = sorted(b for b, o in self.branches().items() if o == oid)
            return heads[0] if heads else oid

        return to_recipe(self, self.resolve(rev), name)

    def compose(self, revs: list[str], out: str | os.PathLike[str], method: str = "mean_ba",
                params: Mapping[str, Any] | None = None, *, progress: ProgressFactory = no_progress) -> Path:
        """Write the merge of ``revs`` to ``out`` without a commit (DitHub's per-query composition);
        the merged objects are stored but unreferenced (``gc`` removes them later)."""
        from .ops.export import write_tree
        from .ops.merge.verb import compose

        return write_tree(self, compose(self, revs, method, params, progress=progress), Path(out), progress)

    def revert(self, rev: str, *, from_merge: str | None = None, method: str = "exact", alpha: float | str | None = None,
               probe: str | None = None, metric: str = "accuracy", force: bool = False, margin: float | None = None,
               branch: str | None = None, message: str | None = None, author: str | None = None,
               executor: str = "local", forget_class: int | None = None, params: Mapping[str, Any] | None = None) -> ObjectId:
        """Undo commit ``rev``, or (``from_merge``) remove input ``rev`` from that merge, as a new
        commit on ``branch`` (default: the current one); an exact revert's replays run on
        ``executor``; see ``ops.revert.revert``. ``forget_class``: forget that class of ``rev``'s
        adapter by its class vector, measured on labelled ``probe`` (``params``: the edit's; see
        ``ops.class_edit``)."""
        from .ops.executor import executor_for
        from .ops.revert import revert

        if forget_class is not None:
            from .ops.class_edit import class_edit

            if from_merge is not None or method != "exact" or alpha is not None or force or margin is not None:
                raise BadInput("--class edits one adapter: it takes --probe and --param, not --from, --method, --alpha, "
                               "--force or --margin")
            if probe is None:
                raise BadInput("--class measures the class vector on a labelled probe set", "pass --probe FILE")
            return class_edit(self, rev, forget_class, probe, dict(params or {}), branch=branch, message=message,
                              author=author)
        if params:
            raise BadInput("--param applies to --class edits")

        return revert(self, rev, from_merge=from_merge, method=method, alpha=alpha, probe=probe, metric=metric, force=force,
                      margin=margin, branch=branch, message=message, author=author, executor=executor_for(executor))

    def rebase(self, onto: str, branch: str | None = None, method: str = "transfusion", params: Mapping[str, Any] | None = None, *,
               all_branches: bool = False, tip_only: bool = False, alpha: float | str = 1.0, probe: str | None = None,
               metric: str = "accuracy", author: str | None = None, executor: str = "local",
               progress: ProgressFactory = no_progress) -> list[RebaseResult]:
        """Move ``branch`` (default: the current one; with ``all_branches``, every branch whose head
        is on another base) onto base ``onto``, one task per branch on ``executor``; see ``ops.rebase``."""
        from .ops.executor import executor_for
        from .ops.rebase import rebase, select_branches

        return rebase(self, onto, select_branches(self, onto, branch, all_branches), method, params, alpha=alpha, probe=probe,
                      metric=metric, tip_only=tip_only, author=author or default_author(), progress=progress,
                      executor=executor_for(executor))

    # -- checks, remotes, maintenance --------------------------------------------
    def verify(self, rev: str = "HEAD", *, policy: str | Path | Policy | None = None, against: list[str] | None = None,
               checks: list[str] | None = None, allow_code: bool = False, progress: ProgressFactory = no_progress) -> VerifyReport:
        """Run the verify checks on ``rev`` with a policy (a ``dithub.toml`` path, a Policy, or
        None: ``dithub.toml`` at the repository root if present, else the defaults); see ``dithub.verify``.
        ``allow_code``: a policy file may name probe/metric functions (``module:function``)."""
        from .verify import verify

        return verify(self, rev, self._policy(policy, allow_code), against=against, checks=checks, progress=progress)

    def verify_many(self, revs: list[str], *, policy: str | Path | Policy | None = None, against: list[str] | None = None,
                    checks: list[str] | None = None, allow_code: bool = False, executor: str = "local",
                    progress: ProgressFactory = no_progress) -> list[VerifyReport]:
        """``verify`` of each revision, here or one task each on ``executor`` (``ray``, ``ray=ADDRESS``)."""
        from .ops.executor import executor_for
        from .verify import verify_many

        return verify_many(self, revs, self._policy(policy, allow_code), against=against, checks=checks,
                           executor=executor_for(executor), progress=progress)

    def _policy(self, policy: str | Path | Policy | None, allow_code: bool) -> Policy:
        """A Policy; a ``dithub.toml`` path; or None: the one at the repository root if present, else the defaults."""
        from .verify import Policy, load_policy

        if isinstance(policy, Policy):
            return policy
        default = self.path / "dithub.toml" if self.path is not None else None
        return load_policy(policy if policy is not None else (default if default is not None and default.is_file() else None),
                           allow_code=allow_code)

    @classmethod
    def clone(cls, url: str, directory: str | Path, *, name: str = "origin", options: dict[str, Any] | None = None,
              progress: ProgressFactory = no_progress) -> tuple[Repo, SyncResult]:
        """A new repository at ``directory`` with every branch, tag and base of the remote at ``url``
        (named ``name``); a clone of the same URL that stopped midway is resumed."""
        from .ops.sync import clone

        make = lambda path, branch, hash: cls.init(path, branch=branch, hash=hash) if branch else cls.open(path)  # noqa: E731
        return clone(url, directory, make, name=name, options=options, progress=progress)

    def migrate(self, to: str, progress: ProgressFactory = no_progress) -> MigrateReport:
        """Rename every object by hash ``to`` (``blake3``), keeping a map of old ids to new; see
        ``ops.migrate``. The repository is reopened on the new store."""
        from .ops.migrate import migrate

        report = migrate(self, to, progress)
        assert self.path is not None
        fresh = Repo.open(self.path)
        self.store, self.refs = fresh.store, fresh.refs
        return report

    def fsck(self, *, repair: bool = False, remote: str | None = None, executor: str = "local",
             progress: ProgressFactory = no_progress) -> FsckReport:
        """Re-hash every object (as tasks on ``executor``) and check connectivity; ``repair``: fetch
        damaged and missing objects again from ``remote`` (see ``ops.sync.fsck_repair``)."""
        if not repair:
            from .ops.executor import executor_for

            run = executor_for(executor)
            return maintenance.fsck(self.store, self.refs, progress, executor=run,
                                    opener=self.opener() if run.name != "local" else None)
        from .ops.sync import fsck_repair

        return fsck_repair(self, remote, progress)

    def gc(self, *, grace_seconds: float = 3600.0) -> GcReport:
        return maintenance.gc(self.store, self.refs, grace_seconds)


__all__ = ["Repo", "CommitResult", "Status", "ShowInfo", "FsckReport", "GcReport"]
