"""Per-input weights (``--weight REV=W`` or ``REV:W``): recorded in the op, so replays and exact
reverts stay exact; defined as mergekit defines them (tests/reference/mergekit_gta.py), and refused
for methods whose paper and mergekit define none."""
from __future__ import annotations

import pytest
import torch
from reference import mergekit_gta

from conftest import commit_task_vectors, stored_f32
from test_merge_vectors import _tv
from dithub import Repo
from dithub.errors import BadInput
from dithub.algorithms.merge import get_method
from dithub.ops.merge.run import replay_merge

W = [2.0, 0.5, 1.5]


@pytest.fixture
def three(tmp_path):
    repo = Repo.init(tmp_path / "r")
    return repo, commit_task_vectors(repo, tmp_path, _tv)


_got = stored_f32


@pytest.mark.parametrize("method, params, reference", [
    ("task_arithmetic", {"alpha": 0.7}, lambda vs, w: mergekit_gta.task_arithmetic(vs, 0.7, w)),
    ("ties", {"density": 0.3, "convention": "mergekit"}, lambda vs, w: mergekit_gta.ties(vs, 0.3, 1.0, w)),
    ("breadcrumbs", {"beta": 0.3, "gamma": 0.05, "alpha": 1.0, "convention": "mergekit"},
     lambda vs, w: mergekit_gta.breadcrumbs(vs, 0.3, 0.05, 1.0, w)),
])
def test_weights_follow_mergekit(method, params, reference):
    g = torch.Generator().manual_seed(1)
    vs = [torch.randn(40, 30, generator=g) for _ in range(3)]
    got = get_method(method)(vs, weights=W, **params)
    torch.testing.assert_close(got, reference(vs, W), rtol=1e-5, atol=1e-6)


def test_dare_weights_scale_each_rescaled_input():
    g = torch.Generator().manual_seed(2)
    vs = [torch.randn(40, 30, generator=g) for _ in range(3)]
    ta = get_method("dare")(vs, p=0.0, weights=W)  # nothing dropped: weighted task arithmetic
    torch.testing.assert_close(ta, mergekit_gta.task_arithmetic(vs, 1.0, W), rtol=1e-5, atol=1e-6)
    ties = get_method("dare")(vs, p=0.0, combine="ties", convention="mergekit", weights=W)
    torch.testing.assert_close(ties, mergekit_gta.sign_consensus_mean(vs, 1.0, W), rtol=1e-5, atol=1e-6)


def test_lora_weights_scale_each_module():
    g = torch.Generator().manual_seed(3)
    factors = [(torch.randn(2, 10, generator=g), torch.randn(12, 2, generator=g), 0.5 + i) for i in range(3)]
    full = lambda ab: ab[1] @ ab[0]  # noqa: E731
    expected = sum(w * s * b @ a for w, (a, b, s) in zip(W, factors))
    torch.testing.assert_close(full(get_method("concat")(factors, weights=W)), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full(get_method("mean_ba")(factors, weights=W)), expected / sum(W), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full(get_method("core_space")(factors, key="w", weights=W, alpha=1.0)), expected, rtol=1e-4, atol=1e-4)
    cores = full(get_method("core_space")(factors, key="w", rule="ties", density=1.0, convention="mergekit", weights=W))
    assert not torch.allclose(cores, full(get_method("core_space")(factors, key="w", rule="ties", density=1.0, convention="mergekit")))


def test_cli_weights_are_recorded_replayed_and_exactly_reverted(three, cli):
    repo, tvs = three
    res = cli(["merge", "task/0:2", "task/1", "task/2", "--weight", "task/1=0.5", "--weight", "task/2=1.5",
               "--method", "ties", "-p", "density=0.3", "--into", "m"], cwd=repo.path)
    assert res.code == 0, res.err
    commit = repo.commit_object("m")
    assert commit.op.params["weights"] == W
    expected = get_method("ties")([t["w.weight"] for t in tvs], density=0.3, weights=W)
    torch.testing.assert_close(_got(repo, "m", "w.weight", (12, 10)), expected)
    assert replay_merge(repo, commit) == commit.tree
    repo.revert("task/1", from_merge="m", method="exact", branch="m")
    repo.merge(["task/0", "task/2"], "ties", {"density": "0.3", "weights": [2.0, 1.5]}, into="direct")
    assert repo.tree_of("m").tensors == repo.tree_of("direct").tensors  # bit for bit
    unweighted = repo.merge(["task/0", "task/1"], "ties", {"density": "0.3", "weights": [1.0, 1.0]}, into="u")
    assert "weights" not in repo.store.read_commit(unweighted).op.params  # all ones: the unweighted merge, same op


def test_weights_are_checked(three, cli):
    repo, _ = three
    with pytest.raises(BadInput, match="magmax takes no per-input weights"):
        repo.merge(["task/0", "task/1"], "magmax", {"weights": [2.0, 1.0]}, into="x")
    res = cli(["merge", "task/0", "task/1", "--weight", "task/5=2", "--method", "ties"], cwd=repo.path)
    assert res.code == 3 and "--weight task/5=2 names no input" in res.err
    res = cli(["merge", "task/0", "task/1", "--weight", "task/1=lots", "--method", "ties"], cwd=repo.path)
    assert res.code == 3 and "'lots' is not a number" in res.err
    res = cli(["merge", "task/0:inf", "task/1", "--method", "ties"], cwd=repo.path)
    assert res.code == 3 and "finite" in res.err
