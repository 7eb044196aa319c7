"""merge --defend ibvs (arXiv 2510.08016): the merge minus scale · the injected backdoor vector,
recorded with the commit so that replay and exact revert apply it again."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import commit_task_vectors
from dithub import Repo
from dithub.errors import BadInput, RefNotFound
from dithub.formats import to_torch
from dithub.ops.merge.run import replay_merge


def _tv(path, seed):
    g = torch.Generator().manual_seed(seed)
    t = {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g)}
    save_file(t, str(path))
    return t


@pytest.fixture
def repo(tmp_path):
    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, _tv, n=2)
    g = torch.Generator().manual_seed(9)
    vector = {"w": torch.randn(6, 4, generator=g)}
    save_file(vector, str(tmp_path / "v.safetensors"))
    repo.commit(tmp_path / "v.safetensors", "injected backdoor vector", branch="security/injected")
    return repo, tvs, vector


def _load(repo, rev, name):
    return to_torch(repo.store.read_tensor(repo.tree_of(rev).tensors[name].id))


def test_ibvs_subtracts_the_scaled_vector_and_replays(repo, cli):
    repo, tvs, vector = repo
    res = cli("merge task/0 task/1 --method task_arithmetic --defend ibvs --defense-vector security/injected "
              "--defense-param scale=0.5 --into m", cwd=repo.path)
    assert res.code == 0, res.err
    torch.testing.assert_close(_load(repo, "m", "w"), 0.3 * (tvs[0]["w"] + tvs[1]["w"]) - 0.5 * vector["w"])
    torch.testing.assert_close(_load(repo, "m", "b"), 0.3 * (tvs[0]["b"] + tvs[1]["b"]))  # not in the vector
    commit = repo.store.read_commit(repo.resolve("m"))
    injected_tree = repo.store.read_commit(repo.resolve("security/injected")).tree
    assert commit.op.params["defense"] == {"method": "ibvs", "scale": 0.5, "vector": injected_tree}
    assert commit.op.data == [injected_tree]
    assert replay_merge(repo, commit) == commit.tree
    # the vector's branch may go: the merge keeps its tree (an edge of the graph)
    assert cli("branch -d security/injected", cwd=repo.path).code == 0
    assert cli("gc --prune-now", cwd=repo.path).code == 0
    assert replay_merge(repo, commit) == commit.tree
    # exact revert of task/1 replays the merge of task/0, defended the same way
    assert cli("revert task/1 --from m --method exact --into m", cwd=repo.path).code == 0
    torch.testing.assert_close(_load(repo, "m", "w"), 0.3 * tvs[0]["w"] - 0.5 * vector["w"])


def test_defence_refuses_what_it_cannot_do(repo, cli, tmp_path):
    repo, _tvs, _vector = repo
    run = lambda extra: cli(f"merge task/0 task/1 --method task_arithmetic --into x {extra}", cwd=repo.path)  # noqa: E731
    assert "--defense-vector" in run("--defend ibvs").err
    assert "ibvs" in run("--defend nope --defense-vector security/injected").err
    assert "scale" in run("--defend ibvs --defense-vector security/injected --defense-param scale=-1").err
    assert "go with --defend" in run("--defense-vector security/injected").err
    save_file({"w": torch.ones(4, 6)}, str(tmp_path / "odd.safetensors"))
    repo.commit(tmp_path / "odd.safetensors", "odd", branch="odd")
    res = run("--defend ibvs --defense-vector odd")
    assert res.code != 0 and "'w'" in res.err and "not a tensor of the merge" in res.err
    with pytest.raises(BadInput, match="alpha auto"):
        repo.merge(["task/0", "task/1"], "task_arithmetic", probe="p.safetensors",
                   defense={"method": "ibvs", "vector": "security/injected"})
    with pytest.raises(RefNotFound, match="no/such/ref"):
        repo.merge(["task/0", "task/1"], "task_arithmetic", defense={"method": "ibvs", "vector": "no/such/ref"})
    assert "x" not in repo.branches()  # nothing committed
