"""Merge commits: parents, op record, exact replay, input checks (task vectors)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import commit_task_vectors
from dithub import Repo
from dithub.errors import BadInput, IncompatibleAdapters
from dithub.ops.merge.run import replay_merge
from dithub.store import DiskObjectStore


def _tv(path, seed, shape=(16, 8), dtype=torch.float32, names=("a.weight", "b.bias")):
    g = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(shape if n.endswith("weight") else shape[:1], generator=g).to(dtype) for n in names}
    save_file(tensors, str(path))
    return tensors


@pytest.fixture
def three(tmp_path):
    repo = Repo.init(tmp_path / "r")
    return repo, commit_task_vectors(repo, tmp_path, _tv)


def test_merge_commit_records_parents_op_and_result(three):
    repo, tvs = three
    oid = repo.merge(["task/0", "task/1", "task/2"], "task_arithmetic", {"alpha": "0.5"})
    commit = repo.store.read_commit(oid)
    heads = [repo.resolve(f"task/{i}") for i in range(3)]
    assert commit.parents == heads and repo.resolve("main") == oid
    assert commit.op.to_json() == {"name": "merge", "method": "task_arithmetic", "params": {"alpha": 0.5, "vectors": "method"},
                                   "inputs": heads}
    tree = repo.tree_of("main")
    expected = {"a.weight": 0.5 * sum(t["a.weight"] for t in tvs), "b.bias": 0.5 * sum(t["b.bias"] for t in tvs)}
    for name in ("a.weight", "b.bias"):  # 1-D tensors too are merged by the method (test_merge_vectors.py)
        got = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors[name].id).data), dtype=torch.float32)
        torch.testing.assert_close(got.reshape(tvs[0][name].shape), expected[name])


def test_svd_merges_average_tensors_that_are_not_matrices(tmp_path):
    def make(path, i):
        g = torch.Generator().manual_seed(i)
        tv = {"w.weight": torch.randn(6, 4, generator=g), "cls": torch.randn(1, 1, 4, generator=g)}
        save_file(tv, str(path))
        return tv

    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, make, n=2)
    repo.merge(["task/0", "task/1"], "tsv", into="m")
    tree = repo.tree_of("m")
    got = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors["cls"].id).data), dtype=torch.float32)
    torch.testing.assert_close(got.reshape(1, 1, 4), (tvs[0]["cls"] + tvs[1]["cls"]) / 2)
    w = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors["w.weight"].id).data), dtype=torch.float32)
    assert not torch.allclose(w.reshape(6, 4), (tvs[0]["w.weight"] + tvs[1]["w.weight"]) / 2)  # the matrix is TSV-merged


def test_replay_reproduces_the_tree_bit_for_bit(three):
    repo, _ = three
    oid = repo.merge(["task/0", "task/1", "task/2"], "dare", {"p": "0.5", "seed": "7", "combine": "ties"})
    commit = repo.store.read_commit(oid)
    assert commit.op.params == {"p": 0.5, "combine": "ties", "lam": 1.0, "seed": 7, "mask": "uint16", "rng": "philox", "convention": "paper", "vectors": "method"}
    assert replay_merge(repo, commit) == commit.tree
    other = repo.merge(["task/0", "task/1", "task/2"], "dare", {"p": "0.5", "seed": "8", "combine": "ties"}, into="x")
    assert repo.store.read_commit(other).tree != commit.tree  # the seed matters


def test_a_merge_recorded_before_a_parameter_existed_replays_as_it_ran(three):
    """DARE gained ``mask`` (16-bit draws) and ``rng`` (Philox, the default since issue 24); a commit
    whose op predates them ran with float32 draws from torch's generator."""
    from dataclasses import replace

    from dithub.store import Op

    repo, _ = three
    old_rule = repo.merge(["task/0", "task/1"], "dare", {"p": "0.5", "seed": "3", "mask": "float32", "rng": "torch"}, into="old")
    commit = repo.store.read_commit(old_rule)
    params = {k: v for k, v in commit.op.params.items() if k not in ("mask", "rng")}  # as the first release recorded it
    legacy = repo.store.write_commit(replace(commit, op=Op("merge", "dare", params, commit.op.inputs)))
    assert replay_merge(repo, repo.store.read_commit(legacy)) == commit.tree
    new_rule = repo.merge(["task/0", "task/1"], "dare", {"p": "0.5", "seed": "3"}, into="new")
    assert repo.store.read_commit(new_rule).tree != commit.tree


@pytest.mark.parametrize("rule,legacy", [
    ("task_arithmetic", {"linear": "core"}),  # the stacked-factor shortcut came with ``linear``
    ("ties", {"bases": "explicit"}),  # triangular factors instead of formed bases came with ``bases``
])
def test_a_core_space_merge_recorded_before_a_parameter_replays_as_it_ran(tmp_path, rule, legacy):
    """core_space gained ``linear`` and then ``bases``; an op without one ran the path before it,
    whose factors differ, and must replay that."""
    from dataclasses import replace

    from conftest import lora_adapter, tiny_vit
    from dithub.store import Op

    repo = Repo.init(tmp_path / "r")
    for i, (r, alpha) in enumerate(((4, 8), (2, 6))):
        lora_adapter(tiny_vit(), tmp_path / f"l{i}", seed=20 + i, r=r, alpha=alpha)
        repo.commit(tmp_path / f"l{i}", f"l{i}", branch=f"class/{i}")
    old_rule = repo.merge(["class/0", "class/1"], "core_space", {"rule": rule, **legacy}, into="old")
    commit = repo.store.read_commit(old_rule)
    params = {k: v for k, v in commit.op.params.items() if k not in legacy}
    recorded = repo.store.write_commit(replace(commit, op=Op("merge", "core_space", params, commit.op.inputs)))
    assert replay_merge(repo, repo.store.read_commit(recorded)) == commit.tree
    new_rule = repo.merge(["class/0", "class/1"], "core_space", {"rule": rule}, into="new")
    assert repo.store.read_commit(new_rule).tree != commit.tree


def test_previous_head_is_history_not_an_input(three):
    repo, _ = three
    first = repo.merge(["task/0", "task/1"], "task_arithmetic")
    second = repo.merge(["task/1", "task/2"], "task_arithmetic")
    c = repo.store.read_commit(second)
    assert c.parents == [first, repo.resolve("task/1"), repo.resolve("task/2")]
    assert c.op.inputs == c.parents[1:]
    direct = repo.merge(["task/1", "task/2"], "task_arithmetic", into="direct")
    assert repo.store.read_commit(direct).tree == c.tree


def test_half_precision_inputs_stay_half(tmp_path):
    repo = Repo.init(tmp_path / "r")
    for i in range(2):
        _tv(tmp_path / f"h{i}.safetensors", i, dtype=torch.bfloat16)
        repo.commit(tmp_path / f"h{i}.safetensors", "h", branch=f"h/{i}")
    repo.merge(["h/0", "h/1"], "magmax")
    assert {e.dtype for e in repo.tree_of("main").tensors.values()} == {"BF16"}


def test_dtype_option_is_recorded_and_replayed(three):
    repo, _ = three
    oid = repo.merge(["task/0", "task/1"], "ties", {"dtype": "BF16"})
    commit = repo.store.read_commit(oid)
    assert {e.dtype for e in repo.tree_of("main").tensors.values()} == {"BF16"}
    assert commit.op.params == {"density": 0.2, "lam": 1.0, "convention": "paper", "dtype": "BF16", "vectors": "method"}
    assert replay_merge(repo, commit) == commit.tree
    with pytest.raises(BadInput, match="--dtype 'F8'"):
        repo.merge(["task/0", "task/1"], "ties", {"dtype": "F8"})


def test_dry_run_writes_nothing(three, cli):
    repo, _ = three
    before = set(repo.store)
    res = cli("merge task/0 task/1 --method ties --dry-run --json", cwd=repo.path)
    plan = json.loads(res.out)
    assert plan["params"] == {"density": 0.2, "lam": 1.0, "convention": "paper"} and plan["paper"] == "2306.01708"
    assert set(repo.store) == before and "main" not in repo.branches()


def test_bad_merges_are_one_line_errors_that_write_nothing(three, cli, tmp_path, vit):
    repo, _ = three
    _tv(tmp_path / "wide.safetensors", 9, shape=(16, 9))
    repo.commit(tmp_path / "wide.safetensors", "wide", branch="wide")
    _tv(tmp_path / "less.safetensors", 9, names=("a.weight",))
    repo.commit(tmp_path / "less.safetensors", "less", branch="less")
    repo.commit(vit.adapter_dir, "lora", branch="lora")
    repo.base_add("b1", vit.base_dir)
    repo.commit_tree(repo.commit_object("task/1").tree, "task 1 recorded on a base", branch="based",
                     base=repo.commit_object("b1").tree)
    store = repo.store
    assert isinstance(store, DiskObjectStore)
    before = set(store)
    cases = [
        ("merge task/0 wide --method ties", IncompatibleAdapters, "F32 [16, 8] in task/0 but F32 [16, 9] in wide"),
        ("merge task/0 less --method ties", IncompatibleAdapters, "'b.bias' is in task/0 but not in less"),
        ("merge task/0 lora --method ties", IncompatibleAdapters, "shared base checkpoint"),
        ("merge task/0 based --method ties", IncompatibleAdapters, "different base checkpoints"),
        ("merge task/0 --method ties", BadInput, "at least two inputs"),
        ("merge task/0 task/0 --method ties", BadInput, "named twice"),
        ("merge task/0 task/1 --method nope", BadInput, "valid methods"),
        ("merge task/0 task/1 --method ties -p k=1", BadInput, "valid parameters"),
        ("merge task/0 task/1 --method ties -p density", BadInput, "KEY=VALUE"),
    ]
    for args, error, text in cases:
        res = cli(args, cwd=repo.path)
        lines = res.err.strip().splitlines()
        assert res.code == error.exit_code and len(lines) == 1 and text in lines[0], (args, res.err)
    assert set(store) == before and "main" not in repo.branches()


def test_log_graph_shows_the_merge(three, cli):
    repo, _ = three
    repo.merge(["task/0", "task/1", "task/2"], "ties")
    out = cli("log --graph", cwd=repo.path).out.splitlines()
    assert out[0].startswith("* ") and "[merge: ties]" in out[0]
    assert out[1] == "| \\" and out[2] == "| | \\"


def test_device_choice(three):
    from dithub.ops.merge.run import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BadInput, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        repo, _ = three
        with pytest.raises(BadInput, match="no CUDA device"):
            repo.merge(["task/0", "task/1"], "ties", device="cuda")
        assert "main" not in repo.branches()


@pytest.mark.gpu
def test_cuda_merge_matches_cpu(three):
    repo, _ = three
    for method, params in [("ties", {}), ("dare", {"seed": "3"}), ("iso_c", {}), ("task_arithmetic", {})]:
        cpu = repo.merge(["task/0", "task/1", "task/2"], method, params, into=f"cpu/{method}", device="cpu")
        gpu = repo.merge(["task/0", "task/1", "task/2"], method, params, into=f"gpu/{method}", device="cuda")
        for name, e in repo.store.read_tree(repo.store.read_commit(cpu).tree).tensors.items():
            other = repo.store.read_tree(repo.store.read_commit(gpu).tree).tensors[name]
            a = torch.frombuffer(bytearray(repo.store.read_tensor(e.id).data), dtype=torch.float32)
            b = torch.frombuffer(bytearray(repo.store.read_tensor(other.id).data), dtype=torch.float32)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
