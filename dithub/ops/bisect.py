"""``bisect``: which commit broke it. As ``git bisect`` does, assuming one transition from good to bad
on the first-parent path from GOOD to BAD, a binary search finds a commit that is bad while its
parent is good, testing at most ⌈log₂(n + 1)⌉ of the n commits strictly between (the endpoints are
taken as given). A test is a probe score against a threshold (``probe_test``) or a user's command
(``command_test``: exit 0 good, 125 skip, 1-127 bad, as ``git bisect run``)."""
from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, IncompatibleAdapters
from ..eval import ScaledAdapter, load_base_model, load_metric, load_probe
from ..store import ObjectId
from ..store.view import RepoView
from .export import export

GOOD, BAD, SKIP = "good", "bad", "skip"


@dataclass(frozen=True)
class Step:
    """One commit tested."""

    commit: ObjectId
    verdict: str
    score: float | None = None
    detail: str = ""


Test = Callable[[ObjectId], Step]


@dataclass
class BisectResult:
    good: ObjectId
    bad: ObjectId
    first_bad: ObjectId
    """A commit that is bad while its first parent is good."""
    between: int
    """The commits strictly between GOOD and BAD on the first-parent path."""
    steps: list[Step] = field(default_factory=list)


def first_parent_path(repo: RepoView, good: ObjectId, bad: ObjectId) -> list[ObjectId]:
    """GOOD, the commits after it, BAD: BAD's first-parent history back to GOOD (BadInput if GOOD is not on it)."""
    path = [bad]
    while path[-1] != good:
        parents = repo.store.read_commit(path[-1]).parents
        if not parents:
            raise BadInput(f"{good[:12]} is not on the first-parent history of {bad[:12]}",
                           "give a GOOD commit that BAD descends from through first parents")
        path.append(parents[0])
    return path[::-1]


def bisect(repo: RepoView, good_rev: str, bad_rev: str, test: Test, on_step: Callable[[Step], None] = lambda s: None) -> BisectResult:
    """The first bad commit between ``good_rev`` and ``bad_rev``; see the module docstring."""
    good, bad = repo.resolve(good_rev), repo.resolve(bad_rev)
    if good == bad:
        raise BadInput("GOOD and BAD are the same commit", "give the last known good commit and a bad one after it")
    path = first_parent_path(repo, good, bad)
    result = BisectResult(good, bad, bad, len(path) - 2)
    lo, hi, skipped = 0, len(path) - 1, set()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        untested = [i for i in sorted(range(lo + 1, hi), key=lambda i: (abs(i - mid), i)) if i not in skipped]
        if not untested:
            raise BadInput(f"every commit between {path[lo][:12]} and {path[hi][:12]} was skipped: the first bad one is "
                           f"{path[hi][:12]} or one of them", "test them another way")
        step = test(path[untested[0]])
        result.steps.append(step)
        on_step(step)
        if step.verdict == SKIP:
            skipped.add(untested[0])
        elif step.verdict == GOOD:
            lo = untested[0]
        else:
            hi = untested[0]
    result.first_bad = path[hi]
    return result


def probe_test(repo: RepoView, probe: str, metric: str = "accuracy", *, min_score: float | None = None,
               max_drop: float | None = None, reference: ObjectId | None = None) -> Test:
    """Good when the commit's adapter, on its base, scores at least ``min_score`` on the probe, or at
    most ``max_drop`` below ``reference`` (the GOOD commit, scored once)."""
    if (min_score is None) == (max_drop is None):
        raise BadInput("bisect needs one threshold", "pass --min-accuracy X or --max-drop X")
    data, score_of = load_probe(probe), load_metric(metric)
    models: dict[ObjectId, Any] = {}

    def score(oid: ObjectId) -> float:
        commit = repo.store.read_commit(oid)
        if commit.base is None:
            raise IncompatibleAdapters(f"commit {oid[:12]} records no base checkpoint to evaluate it on",
                                       "commit adapters with --base NAME, or bisect with --run CMD")
        base = repo.store.read_tree(commit.base)
        if commit.base not in models:
            models[commit.base] = load_base_model(repo, base)
        adapter = ScaledAdapter(repo, base, repo.store.read_tree(commit.tree), model=models[commit.base])
        try:
            return score_of(adapter.set_scale(1.0), data)
        finally:
            adapter.set_scale(0.0)

    floor = min_score if min_score is not None else None

    def test(oid: ObjectId) -> Step:
        nonlocal floor
        if floor is None:
            assert reference is not None and max_drop is not None
            floor = score(reference) - max_drop
        value = score(oid)
        return Step(oid, GOOD if value >= floor else BAD, value, f"{metric} {value:.4f} (threshold {floor:.4f})")

    return test


def command_test(repo: RepoView, command: str) -> Test:
    """Run ``command`` (a shell command line the user gave) per commit, with the commit's adapter
    written to a temporary directory: ``DITHUB_BISECT_DIR`` names it, ``DITHUB_BISECT_COMMIT`` the commit."""

    def test(oid: ObjectId) -> Step:
        with tempfile.TemporaryDirectory(prefix="dithub-bisect-") as tmp:
            out = Path(tmp) / "adapter"
            export(repo, oid, out)
            env = {**os.environ, "DITHUB_BISECT_DIR": str(out), "DITHUB_BISECT_COMMIT": oid}
            try:
                code = subprocess.run(command, shell=True, env=env, cwd=repo.path, check=False).returncode
            except OSError as exc:
                raise BadInput(f"bisect --run {shlex.quote(command)} cannot run: {exc}") from None
        if code == 125:
            return Step(oid, SKIP, None, "exit 125: cannot be tested")
        if code < 0 or code > 127:
            raise BadInput(f"bisect --run {shlex.quote(command)} exited {code} on {oid[:12]}: bisect stopped",
                           "exit 0 for good, 1-127 for bad, 125 to skip a commit (as git bisect run)")
        return Step(oid, GOOD if code == 0 else BAD, None, f"exit {code}")

    return test
