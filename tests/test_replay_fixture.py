"""Every op recorded in tests/fixtures/replay-repo (made by an earlier dithub: see its generator)
replays to the tree id it recorded: merges by every method, an OPCM chain, a merge of merges,
exact and negation reverts, data-free rebases. A method whose definition changes must keep these
replaying bit for bit (``Algorithm.legacy``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dithub import Repo
from dithub.store import Commit, ObjectId

FIXTURE = Path(__file__).parent / "fixtures" / "replay-repo"
METHODS = {"task_arithmetic", "ties", "dare", "breadcrumbs", "magmax", "tsv", "iso_c", "iso_cts",
           "concat", "mean_ba", "core_space", "ema", "opcm"}
"""The merge methods registered when the fixture was made: each has a merge in it."""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    copy = tmp_path_factory.mktemp("replay") / "repo"
    shutil.copytree(FIXTURE, copy)
    return Repo.open(copy)


def _commits(repo: Repo) -> dict[ObjectId, Commit]:
    seen: dict[ObjectId, Commit] = {}
    stack = list(repo.branches().values())
    while stack:
        oid = stack.pop()
        if oid not in seen:
            seen[oid] = repo.store.read_commit(oid)
            stack.extend(seen[oid].parents)
    return seen


def _replay(repo: Repo, commit: Commit) -> ObjectId:
    """The tree ``commit``'s op recomputes, from the op record alone."""
    op = commit.op
    if op.name == "merge" and op.method == "opcm":
        from dithub.ops.merge.sequential import opcm_step, recorded_project

        prev = next((repo.store.read_commit(p) for p in commit.parents if repo.store.read_commit(p).op.method == "opcm"), None)
        state = (repo.store.read_tree(prev.tree), prev.base) if prev else None
        return opcm_step(repo, state, op.inputs[0], float(op.params["alpha"]), project=recorded_project(op.params))
    if op.name == "merge":
        from dithub.ops.merge.run import replay_merge

        return replay_merge(repo, commit)
    if op.name == "revert" and op.method == "exact":
        from dithub.ops.revert import replay_without

        return replay_without(repo, op.params["from"], op.params["removed"], "replay")
    if op.name == "revert" and op.method == "negation":
        from dithub.ops.revert import negation_tree

        merge, removed = (repo.store.read_commit(op.params[k]) for k in ("from", "removed"))
        return negation_tree(repo, merge, removed, float(op.params["alpha"]))
    if op.name == "rebase":
        from dithub.algorithms.rebase import get_rebase
        from dithub.ops.rebase import _keys, prepare, transport_tree

        source = repo.store.read_commit(op.inputs[0])
        tree, old, new = (repo.store.read_tree(t) for t in (source.tree, source.base, commit.base))
        method = get_rebase(op.method)
        params = method.params(method.recorded({k: v for k, v in op.params.items() if k != "alpha"}))
        transport = prepare(repo, method, params, source.base, commit.base, _keys(old, [tree]), None)
        return repo.store.write_tree(transport_tree(repo, tree, old, new, transport, float(op.params["alpha"])))
    raise AssertionError(f"no replay for op {op.name} {op.method}")


def test_every_recorded_op_replays_to_its_tree(repo):
    replayed: dict[tuple[str, str | None], int] = {}
    for oid, commit in _commits(repo).items():
        if commit.op.name in ("commit", "base"):
            continue
        assert _replay(repo, commit) == commit.tree, (oid, commit.op.to_json())
        replayed[commit.op.name, commit.op.method] = replayed.get((commit.op.name, commit.op.method), 0) + 1
    assert {m for name, m in replayed if name == "merge"} == METHODS
    assert {("revert", "exact"), ("revert", "negation"), ("rebase", "naive"), ("rebase", "transfusion")} <= set(replayed)
    assert replayed["merge", "opcm"] == 3 and replayed["merge", "core_space"] == 3
