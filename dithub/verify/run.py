"""Run the policy's checks on one commit and collect a report (what ``dithub verify`` prints)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ops.executor import Executor
from ..ops.reports import save_report
from ..store.history import expand_ref
from ..progress import ProgressFactory, no_progress
from ..store import ObjectId
from ..store.refs import HEADS
from .checks import CHECKS, ROWS, CheckResult, Target, integrity
from .policy import Policy
from ..store.view import RepoView

JSON_FORMAT = 1
"""Version of the ``--json`` report layout (docs/verify.md); bumped on any incompatible change."""


@dataclass
class VerifyReport:
    ref: str
    commit: ObjectId
    branch: str | None
    policy: str | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict:
        return {"format": JSON_FORMAT, "ref": self.ref, "commit": self.commit, "branch": self.branch, "policy": self.policy,
                "ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def branch_of(repo: RepoView, rev: str) -> str | None:
    """The branch ``rev`` names (``class/dog``, ``refs/heads/class/dog``), or None for other revisions."""
    full = expand_ref(repo.refs, rev)
    if full == "HEAD":
        return repo.current_branch()
    return full[len(HEADS):] if full and full.startswith(HEADS) else None


def verify(repo: RepoView, rev: str, policy: Policy, *, against: list[str] | None = None, checks: list[str] | None = None,
           progress: ProgressFactory = no_progress) -> VerifyReport:
    """Run the checks the policy enables for ``rev``'s branch (or ``checks``) on the commit ``rev``
    names; the report is kept as the commit's last (a model card cites it)."""
    report = _run(repo, rev, policy, against, checks, progress)
    save_report(repo, report.commit, report.to_json())
    return report


def verify_many(repo: RepoView, revs: list[str], policy: Policy, *, against: list[str] | None = None, checks: list[str] | None = None,
                executor: Executor | None = None, progress: ProgressFactory = no_progress) -> list[VerifyReport]:
    """``verify`` of each revision: here in turn, or one task per revision on ``executor`` (the
    policy sent once); the reports in ``revs``' order."""
    if executor is None or executor.name == "local":
        return [verify(repo, rev, policy, against=against, checks=checks, progress=progress) for rev in revs]
    return executor.map(_verify_task, revs, shared=(repo.opener(), policy, against, checks))


def _verify_task(shared: tuple[Any, Policy, list[str] | None, list[str] | None], rev: str) -> VerifyReport:
    opener, policy, against, checks = shared
    return verify(opener(), rev, policy, against=against, checks=checks)


def _run(repo: RepoView, rev: str, policy: Policy, against: list[str] | None, checks: list[str] | None,
         progress: ProgressFactory) -> VerifyReport:
    oid = repo.resolve(rev)
    branch = branch_of(repo, rev)
    settings = policy.for_branch(branch)
    names = list(checks or settings.checks)
    report = VerifyReport(rev, oid, branch, policy.source)
    if "integrity" in names:  # first: the other checks read the objects it vouches for
        report.checks.extend(integrity(repo, oid, progress))
        names.remove("integrity")
        if not report.ok:
            report.checks.extend(CheckResult(row, "skip", detail="integrity failed") for n in names for row in ROWS[n])
            return report
    commit = repo.store.read_commit(oid)
    base = repo.store.read_tree(commit.base) if commit.base and repo.store.contains(commit.base) else None
    target = Target(repo, oid, commit, repo.store.read_tree(commit.tree), base, branch, settings, policy, against, progress)
    for name in names:
        report.checks.extend(CHECKS[name](target))
    return report
