"""1-D tensors (biases, norm weights) are merged by the method itself, as the methods' reference code
(and mergekit, peft) does; merges recorded before that (no ``vectors`` in the op) replay as they were
made, with such tensors averaged (issue 18, point 1)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import commit_task_vectors, stored_f32
from dithub import Repo
from dithub.algorithms.merge import get_method
from dithub.ops.merge.run import replay_merge
from dithub.store import Commit, Op

ELEMENTWISE = [("task_arithmetic", {"alpha": 0.3}), ("ties", {"density": 0.4}), ("dare", {"p": 0.3, "seed": 5}),
               ("breadcrumbs", {"beta": 0.5, "gamma": 0.1}), ("magmax", {})]


def _tv(path, seed):
    g = torch.Generator().manual_seed(seed)
    tv = {"w.weight": torch.randn(12, 10, generator=g), "w.bias": torch.randn(12, generator=g), "norm.weight": torch.randn(10, generator=g)}
    save_file(tv, str(path))
    return tv


@pytest.fixture
def three(tmp_path):
    repo = Repo.init(tmp_path / "r")
    return repo, commit_task_vectors(repo, tmp_path, _tv)


_got = stored_f32


def test_task_arithmetic_scales_the_sum_of_every_tensor(three):
    repo, tvs = three
    repo.merge(["task/0", "task/1", "task/2"], "task_arithmetic", {"alpha": "0.3"}, into="m")
    for name in ("w.weight", "w.bias", "norm.weight"):  # λ·Στ for every tensor (arXiv 2212.04089, eq. 1)
        torch.testing.assert_close(_got(repo, "m", name, tvs[0][name].shape), 0.3 * sum(t[name] for t in tvs))
    assert repo.commit_object("m").op.params["vectors"] == "method"


@pytest.mark.parametrize("method, params", ELEMENTWISE)
def test_every_elementwise_method_merges_1d_tensors_as_it_merges_matrices(three, method, params):
    repo, tvs = three
    repo.merge(["task/0", "task/1", "task/2"], method, {k: str(v) for k, v in params.items()}, into="m")
    for name in ("w.bias", "norm.weight"):
        expected = get_method(method)([t[name] for t in tvs], key=name, **params)
        torch.testing.assert_close(_got(repo, "m", name, tvs[0][name].shape), expected)
        assert not torch.allclose(expected, sum(t[name] for t in tvs) / 3)  # not the mean it used to be
    assert replay_merge(repo, repo.commit_object("m")) == repo.commit_object("m").tree


def test_a_merge_recorded_without_vectors_replays_with_1d_tensors_averaged(three):
    repo, tvs = three
    heads = [repo.resolve(f"task/{i}") for i in range(3)]
    legacy = Commit("0" * 32, heads, None, "t", 0.0, "recorded before", Op("merge", "ties", {"density": 0.4, "lam": 1.0}, heads))
    tree = repo.store.read_tree(replay_merge(repo, legacy))
    bias = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors["w.bias"].id).data), dtype=torch.float32)
    torch.testing.assert_close(bias, sum(t["w.bias"] for t in tvs) / 3)


def test_negation_removes_an_input_from_every_tensor_of_a_linear_merge(three):
    repo, tvs = three
    repo.merge(["task/0", "task/1", "task/2"], "task_arithmetic", {"alpha": "0.3"}, into="m")
    repo.revert("task/1", from_merge="m", method="negation", branch="m")
    for name in ("w.weight", "w.bias"):
        torch.testing.assert_close(_got(repo, "m", name, tvs[0][name].shape), 0.3 * (tvs[0][name] + tvs[2][name]))


@pytest.mark.parametrize("method", ["tsv", "iso_c", "iso_cts"])
def test_spectral_methods_scale_the_averaged_tensors_with_the_rest(tmp_path, method):
    """danielm1405/iso-merging (src/utils/iso.py, TSVM_utils.py) decomposes 2-D tensors but the
    CLIP ``text_projection``, averages every other tensor, and applies the whole merged vector at
    scaling coefficient α: the averaged tensors are scaled too."""
    def tv(path, seed):
        g = torch.Generator().manual_seed(seed)
        t = {"w.weight": torch.randn(12, 10, generator=g), "w.bias": torch.randn(12, generator=g),
             "text_projection": torch.randn(6, 6, generator=g)}
        save_file(t, str(path))
        return t

    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, tv)
    repo.merge(["task/0", "task/1", "task/2"], method, {"alpha": "0.5"}, into="m")
    for name, shape in (("w.bias", (12,)), ("text_projection", (6, 6))):
        torch.testing.assert_close(_got(repo, "m", name, shape), 0.5 * sum(t[name] for t in tvs) / 3)
    torch.testing.assert_close(_got(repo, "m", "w.weight", (12, 10)), get_method(method)([t["w.weight"] for t in tvs], alpha=0.5))
    assert repo.commit_object("m").op.params["vectors"] == "method"
    heads = [repo.resolve(f"task/{i}") for i in range(3)]
    params = {k: v for k, v in repo.commit_object("m").op.params.items() if k != "vectors"}
    legacy = Commit("0" * 32, heads, None, "t", 0.0, "recorded before", Op("merge", method, params, heads))
    tree = repo.store.read_tree(replay_merge(repo, legacy))  # as merges before: averaged unscaled, every 2-D decomposed
    bias = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors["w.bias"].id).data), dtype=torch.float32)
    torch.testing.assert_close(bias, sum(t["w.bias"] for t in tvs) / 3)


def test_negation_removes_an_input_from_the_scaled_mean_of_a_spectral_merge(tmp_path):
    def tv(path, seed):
        g = torch.Generator().manual_seed(seed)
        t = {"w.weight": torch.randn(12, 10, generator=g), "w.bias": torch.randn(12, generator=g)}
        save_file(t, str(path))
        return t

    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, tv)
    repo.merge(["task/0", "task/1", "task/2"], "iso_c", {"alpha": "0.5"}, into="m")
    repo.revert("task/1", from_merge="m", method="negation", force=True, branch="m")
    torch.testing.assert_close(_got(repo, "m", "w.bias", (12,)), 0.5 * (tvs[0]["w.bias"] + tvs[2]["w.bias"]) / 2)
