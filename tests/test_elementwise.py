"""Elementwise merges without torch (issue 24): task arithmetic and MagMax of task vectors computed
on numpy give the torch path's bits — NaN, infinities, rounding to bfloat16 and float16, weights (a
fused multiply-add in torch) and scales included — and a CLI merge of task vectors imports no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.ops.merge import elementwise
from dithub.ops.merge.plan import plan_merge
from dithub.ops.merge.run import run_merge

CASES = [
    ("task_arithmetic", {}, None),
    ("task_arithmetic", {"alpha": 0.37, "weights": [1.3, 0.7, -2.1]}, None),
    ("task_arithmetic", {"weights": [0.5, 2.5, 1.0]}, "BF16"),
    ("task_arithmetic", {"alpha": 3.0}, "F16"),
    ("magmax", {}, None),
    ("magmax", {"tie": "first", "alpha": 1.7}, "BF16"),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("elementwise")
    r = Repo.init(root / "repo")
    g = torch.Generator().manual_seed(3)
    for i, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16]):
        a = torch.randn(257, 129, generator=g) * 10 ** (i - 1)
        a[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.3e38 if i == 0 else 6e4, -0.0, 1e-30])
        tensors = {"a": a, "b": torch.randn(33, generator=g), "c": torch.randint(-3, 4, (5, 7), generator=g).float()}  # ties in |x|
        save_file({k: v.to(dtype) for k, v in tensors.items()}, str(root / f"t{i}.safetensors"))
        r.commit(root / f"t{i}.safetensors", f"t{i}", branch=f"t/{i}")
    return r


@pytest.mark.parametrize("method, params, dtype", CASES)
def test_numpy_merges_give_the_torch_bits(repo, method, params, dtype):
    plan = plan_merge(repo, ["t/0", "t/1", "t/2"], method, {**params, **({"dtype": dtype} if dtype else {})})
    trees = [repo.tree_of(f"t/{i}") for i in range(3)]
    assert elementwise.applies(plan, trees, "cpu")
    ours = elementwise.run(repo, plan, trees)
    assert ours == run_merge(repo, plan, device="cpu")  # the same tree id: every tensor's bytes equal


def test_other_merges_take_the_torch_path(repo, adapters):
    plan = plan_merge(repo, ["t/0", "t/1"], "ties")
    assert not elementwise.applies(plan, [repo.tree_of("t/0"), repo.tree_of("t/1")], "cpu")
    plan = plan_merge(repo, ["t/0", "t/1"], "task_arithmetic")
    assert not elementwise.applies(plan, [repo.tree_of("t/0"), repo.tree_of("t/1")], "cuda")


def test_a_cli_merge_of_task_vectors_imports_no_torch(repo):
    code = ("import sys; from dithub.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, *[m for m in ('torch', 'transformers', 'peft', 'scipy') if m in sys.modules])")
    for method in elementwise.METHODS:
        args = ["-C", str(repo.path), "merge", "t/0", "t/1", "t/2", "--method", method, "--into", f"cli/{method}"]
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
        assert out.split()[-1] == "0", out  # exit 0, and no heavy module listed after it
        commit = repo.commit_object(f"cli/{method}")
        assert commit.tree == run_merge(repo, plan_merge(repo, commit.op.inputs, method, commit.op.params), device="cpu")

