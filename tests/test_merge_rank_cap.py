"""A rank cap for LoRA-space merges (``-p rank=R`` on concat, mean_ba, core_space): the best rank-R
approximation of the merged ΔW, computed in factored form, with its relative Frobenius error
reported by ``merge`` and stored in the op."""
from __future__ import annotations

import pytest
import torch

from dithub import Repo
from dithub.algorithms.merge import get_method
from dithub.ops.merge.run import replay_merge
from test_merge_lora import _delta


def _factors(seed: int, n: int = 3, r: int = 4, m: int = 30, k: int = 20):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(r, k, generator=g, dtype=torch.float64), torch.randn(m, r, generator=g, dtype=torch.float64),
             0.5 + i) for i in range(n)]


def _best(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """The best rank-``rank`` approximation by a dense SVD (Eckart–Young), and its relative error."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank], float(s[rank:].square().sum().sqrt() / s.square().sum().sqrt())


@pytest.mark.parametrize("method, params, exact", [
    ("concat", {}, lambda fs: sum(s * b @ a for a, b, s in fs)),
    ("mean_ba", {}, lambda fs: sum(s * b @ a for a, b, s in fs) / len(fs)),
    ("core_space", {"alpha": 1.0}, lambda fs: sum(s * b @ a for a, b, s in fs)),
])
def test_rank_cap_is_the_best_approximation_with_its_error(method, params, exact):
    factors = _factors(4)
    want, err = _best(exact(factors), 5)
    result = get_method(method)(factors, key="w", rank=5, **params)
    a, b = result
    assert a.shape[0] == 5 and b.shape[1] == 5
    torch.testing.assert_close((b.double() @ a.double()), want, rtol=1e-4, atol=1e-4)
    assert result.error == pytest.approx(err, rel=1e-4)
    full = get_method(method)(factors, key="w", **params)
    assert getattr(full, "error", None) is None  # no cap, nothing dropped, nothing reported


def test_rank_cap_never_forms_the_dense_update(monkeypatch):
    factors = _factors(5, m=300, k=200)
    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda x, **kw: calls.append(tuple(x.shape)) or svd(x, **kw))
    get_method("concat")(factors, rank=4)
    assert calls and all(max(shape) <= 12 for shape in calls)  # the 12 x 12 core, not 300 x 200


def test_merge_reports_and_records_the_error(adapters, tmp_path, cli):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    res = cli(["merge", "class/a", "class/b", "--method", "concat", "-p", "rank=3", "--into", "capped"], cwd=repo.path)
    assert res.code == 0, res.err
    assert "rank 3: relative Frobenius error" in res.out
    commit = repo.commit_object("capped")
    error = commit.op.params["rank_error"]
    assert 0 < error["max"] < 1 and 0 < error["overall"] <= error["max"]
    assert repo.tree_of("capped").config["r"] == 3
    assert replay_merge(repo, commit) == commit.tree
    # the recorded overall error is that of the dense updates, module by module
    from dithub.formats import lora_modules

    dropped = energy = 0.0
    for module in lora_modules(repo.tree_of("class/a").tensors):
        exact = _delta(repo, "class/a", module) + _delta(repo, "class/b", module)
        s = torch.linalg.svdvals(exact.double())
        dropped, energy = dropped + float(s[3:].square().sum()), energy + float(s.square().sum())
    assert error["overall"] == pytest.approx((dropped / energy) ** 0.5, rel=1e-3)
