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



@pytest.fixture(scope="module")
def lora_repo(tmp_path_factory, adapters):
    """Two LoRA adapters of different ranks and scales, a bfloat16 copy of one, and one sharing the
    first's B (DitHub's layout), none with whole tensors."""
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("loras-np")
    r = Repo.init(root / "repo")
    r.commit(adapters / "a", "a", branch="a")
    r.commit(adapters / "b", "b", branch="b")
    for name, change in (("a16", lambda k, v: v.to(torch.bfloat16)), ("shared", lambda k, v: v if "lora_B" in k else 2 * v)):
        d = root / name
        d.mkdir()
        (d / "adapter_config.json").write_text((adapters / "a" / "adapter_config.json").read_text())
        save_file({k: change(k, v) for k, v in load_file(str(adapters / "a" / "adapter_model.safetensors")).items()},
                  str(d / "adapter_model.safetensors"))
        r.commit(d, name, branch=name)
    return r


@pytest.mark.parametrize("revs, method, params", [
    (["a", "b"], "concat", {}), (["a", "b"], "concat", {"alpha": 0.7, "weights": [1.5, -0.5]}),
    (["a", "a16"], "concat", {"dtype": "F16"}), (["a", "b"], "mean_ba", {}), (["a", "b"], "mean_ba", {"weights": [2.0, 1.0]}),
    (["a", "shared"], "mean_ba", {}), (["a", "shared"], "mean_ba", {"weights": [0.3, 1.1], "dtype": "BF16"}),
])
def test_lora_concat_and_mean_ba_without_torch_give_the_torch_bits(lora_repo, revs, method, params):
    plan = plan_merge(lora_repo, revs, method, params)
    trees = [lora_repo.tree_of(r) for r in revs]
    assert elementwise.applies(plan, trees, "cpu")
    assert elementwise.run(lora_repo, plan, trees) == run_merge(lora_repo, plan, device="cpu")


def test_a_rank_cap_or_whole_tensors_take_the_torch_path(lora_repo, vit):
    plan = plan_merge(lora_repo, ["a", "b"], "concat", {"rank": 2})
    assert not elementwise.applies(plan, [lora_repo.tree_of("a"), lora_repo.tree_of("b")], "cpu")
    r = Repo.init(lora_repo.path.parent / "heads")
    r.commit(vit.adapter_dir, "with a head", branch="x")
    r.commit(vit.adapter2_dir, "with a head", branch="y")
    plan = plan_merge(r, ["x", "y"], "mean_ba")
    assert not elementwise.applies(plan, [r.tree_of("x"), r.tree_of("y")], "cpu")  # modules_to_save: averaged by torch


def test_a_cli_merge_of_lora_adapters_imports_no_torch(lora_repo):
    code = ("import sys; from dithub.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, *[m for m in ('torch', 'transformers', 'peft', 'scipy') if m in sys.modules])")
    for method in elementwise.LORA_METHODS:
        args = ["-C", str(lora_repo.path), "merge", "a", "b", "--method", method, "--into", f"cli/{method}"]
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
        assert out.split()[-1] == "0", out
