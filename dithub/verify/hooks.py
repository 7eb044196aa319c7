"""Git hooks in the host git repository (found with gitpython) that run ``dithub verify``.

``pre-commit`` and ``pre-push`` both call ``dithub hooks run``: it verifies every dithub branch the
policy's ``[hooks] refs`` patterns cover whose head changed since it last passed (recorded in
``.dithub/verified.json``), and fails the git command if any check fails. A hook file dithub did
not write is never overwritten silently: ``--force`` keeps it as ``<hook>.dithub-backup``, and
uninstall puts it back.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInput
from ..progress import ProgressFactory, no_progress
from ..store import atomic_write
from .policy import Policy
from .run import VerifyReport, verify
from ..store.view import RepoView

HOOKS = ("pre-commit", "pre-push")
MARK = "# installed by dithub hooks install"
BACKUP = ".dithub-backup"


def hooks_dir(start: Path) -> Path:
    """The hooks folder of the git repository holding ``start`` (``core.hooksPath`` respected)."""
    import git

    try:
        host = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BadInput(f"{start} is not inside a git repository", "run `git init` there first, or pass --git DIR") from None
    custom = host.config_reader().get_value("core", "hooksPath", "")
    if custom:
        path = Path(os.path.expanduser(str(custom)))
        return path if path.is_absolute() else Path(host.working_tree_dir or host.git_dir) / path
    return Path(host.git_dir) / "hooks"


def _script(repo_path: Path, hook: str, policy: Path | None, allow_code: bool) -> str:
    """The hook: this interpreter in isolated mode (``-I``: neither the working directory, which git
    sets to the worktree, nor PYTHONPATH or user site-packages on ``sys.path``), so nothing a
    checked-out tree holds is imported in place of dithub or its dependencies. Any failure to run
    (no interpreter, no dithub, a crash) exits non-zero, which fails the git command."""
    args = [sys.executable, "-I", "-m", "dithub", "-C", str(repo_path), "hooks", "run", hook]
    if policy is not None:
        args += ["--policy", str(policy)]
    if allow_code:
        args.append("--allow-code")
    return f"#!/bin/sh\n{MARK}: verifies the dithub branches that changed\nexec {shlex.join(args)}\n"


def install(repo: RepoView, *, git_dir: Path | None = None, policy: Path | None = None, force: bool = False,
            allow_code: bool = False) -> list[Path]:
    """Write the pre-commit and pre-push hooks; returns their paths. ``allow_code``: the policy may
    name probe and metric functions (recorded in the hook; modules still never come from the tree)."""
    if repo.path is None:
        raise BadInput("an in-memory repository cannot have hooks")
    folder = hooks_dir(git_dir or repo.path)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for hook in HOOKS:
        path = folder / hook
        if path.exists() and MARK not in path.read_text(errors="replace"):
            if not force:
                raise BadInput(f"{path} exists and was not written by dithub",
                               "pass --force to keep it as " + path.name + BACKUP + " and install dithub's")
            os.replace(path, path.with_name(path.name + BACKUP))
        atomic_write(path, _script(repo.path.resolve(), hook, policy.resolve() if policy else None, allow_code).encode())
        path.chmod(0o755)
        written.append(path)
    return written


def uninstall(repo: RepoView, *, git_dir: Path | None = None) -> list[Path]:
    """Remove dithub's hooks (restoring any hook they replaced); returns the paths removed."""
    if repo.path is None:
        raise BadInput("an in-memory repository has no hooks")
    folder = hooks_dir(git_dir or repo.path)
    removed = []
    for hook in HOOKS:
        path = folder / hook
        if path.exists() and MARK in path.read_text(errors="replace"):
            path.unlink()
            removed.append(path)
            backup = path.with_name(path.name + BACKUP)
            if backup.exists():
                os.replace(backup, path)
    return removed


def _state_path(repo: RepoView) -> Path:
    assert repo.path is not None
    return repo.path / ".dithub" / "verified.json"


def verified(repo: RepoView) -> dict[str, str]:
    """Branch -> the last head that passed verify in a hook."""
    path = _state_path(repo)
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def run_hook(repo: RepoView, policy: Policy, *, progress: ProgressFactory = no_progress,
             on_report: Callable[[VerifyReport], None] = lambda r: None) -> list[VerifyReport]:
    """Verify each covered branch whose head changed since it last passed; record those that pass."""
    state = verified(repo)
    reports = []
    for branch, head in sorted(repo.branches().items()):
        if not policy.hooks_cover(branch) or state.get(branch) == head:
            continue
        report = verify(repo, branch, policy, progress=progress)
        on_report(report)
        reports.append(report)
        if report.ok:
            state[branch] = head
    atomic_write(_state_path(repo), json.dumps(state, indent=1, sort_keys=True).encode())
    return reports
