"""Elementwise merges without torch (issue 24): task arithmetic, TIES, DARE (Philox), Breadcrumbs
and MagMax of task vectors, and concat and mean_ba of LoRA adapters, computed on numpy give the torch
path's bits — NaN, infinities, ties in magnitude, zero sums under the majority rule, every
convention, rounding to bfloat16 and float16, weights (a fused multiply-add in torch) and scales
included — and a CLI merge with each imports no torch."""
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
    ("ties", {}, None),
    ("ties", {"density": 1.0}, None),  # every zero sum of z decided by the majority (negative) sign
    ("ties", {"density": 0.5, "lam": 0.7, "convention": "mergekit"}, "BF16"),
    ("ties", {"density": 0.3, "convention": "round"}, None),
    ("ties", {"density": 1.0, "weights": [1.0, 2.0, 0.5]}, None),
    ("ties", {"density": 0.4, "weights": [0.3, -1.2, 2.0], "convention": "mergekit"}, "F16"),
    ("breadcrumbs", {}, None),
    ("breadcrumbs", {"beta": 0.5, "gamma": 0.1, "convention": "mergekit"}, None),
    ("breadcrumbs", {"beta": 0.4, "gamma": 0.05, "convention": "round", "alpha": 1.1}, "BF16"),
    ("breadcrumbs", {"beta": 0.5, "gamma": 0.1, "weights": [2.0, 0.5, -1.0]}, None),
    ("dare", {}, None),  # rng=philox: the default
    ("dare", {"rng": "philox", "p": 0.1, "combine": "ties", "seed": 7}, None),
    ("dare", {"rng": "philox", "p": 0.3, "combine": "ties", "convention": "mergekit"}, "BF16"),
    ("dare", {"rng": "philox", "p": 0.1, "combine": "ties", "weights": [1.0, 3.0, 0.5]}, None),
    ("dare", {"rng": "philox", "p": 0.5, "lam": 0.8, "weights": [1.5, -0.5, 1.0]}, "F16"),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("elementwise")
    r = Repo.init(root / "repo")
    g = torch.Generator().manual_seed(3)
    for i, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16]):
        a = torch.randn(257, 129, generator=g) * 10 ** (i - 1)
        a[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.3e38 if i == 0 else 6e4, -0.0, 1e-30])
        tensors = {"a": a, "b": torch.randn(33, generator=g), "c": torch.randint(-3, 4, (5, 7), generator=g).float(),  # ties in |x|
                   "z": _zero_sums(i)}
        save_file({k: v.to(dtype) for k, v in tensors.items()}, str(root / f"t{i}.safetensors"))
        r.commit(root / f"t{i}.safetensors", f"t{i}", branch=f"t/{i}")
    return r


def _zero_sums(i: int) -> torch.Tensor:
    """Entries whose three inputs sum to exactly 0 with entries of both signs (the first 40), and
    sums that are mostly negative (the rest): TIES' majority rule elects − on the zero sums."""
    base = torch.arange(1, 65, dtype=torch.float32) % 7 + 1
    return [base, -base * (torch.arange(64) < 40), -(base + 8) * (torch.arange(64) >= 40)][i]


@pytest.mark.parametrize("method, params, dtype", CASES)
def test_numpy_merges_give_the_torch_bits(repo, method, params, dtype, monkeypatch):
    from dithub.algorithms.merge import arrays, full_space

    plan = plan_merge(repo, ["t/0", "t/1", "t/2"], method, {**params, **({"dtype": dtype} if dtype else {})})
    trees = [repo.tree_of(f"t/{i}") for i in range(3)]
    assert elementwise.applies(plan, trees, "cpu")
    ours = elementwise.run(repo, plan, trees)
    assert ours == run_merge(repo, plan, device="cpu")  # the same tree id: every tensor's bytes equal
    if method == "dare":  # drawn and merged in chunks (and the majority's fixes gathered per chunk) as on one
        monkeypatch.setattr(arrays, "DARE_CHUNK", 64)
        monkeypatch.setattr(full_space, "DARE_CHUNK", 1 << 10)
        assert elementwise.run(repo, plan, trees) == ours == run_merge(repo, plan, device="cpu")


def test_the_majority_rule_is_exercised():
    """The zero-sum fixture decides TIES differently under the authors' majority rule than with +
    (so the cases above compare that branch, not only the first election)."""
    from dithub.algorithms.merge import get_method

    xs = [_zero_sums(i) for i in range(3)]
    paper = get_method("ties")(xs, density=1.0)
    plus = get_method("ties")(xs, density=1.0, convention="round")
    assert (paper[:40] < 0).all() and (plus[:40] > 0).all()


def test_other_merges_take_the_torch_path(repo, monkeypatch):
    trees = [repo.tree_of("t/0"), repo.tree_of("t/1")]
    assert not elementwise.applies(plan_merge(repo, ["t/0", "t/1"], "dare", {"rng": "torch"}), trees, "cpu")  # its generator
    assert not elementwise.applies(plan_merge(repo, ["t/0", "t/1"], "tsv"), trees, "cpu")
    assert not elementwise.applies(plan_merge(repo, ["t/0", "t/1"], "task_arithmetic"), trees, "cuda")
    monkeypatch.setenv("DITHUB_KERNELS", "plain")  # plain torch everywhere, as asked
    assert not elementwise.applies(plan_merge(repo, ["t/0", "t/1"], "ties"), trees, "cpu")


def test_philox_draws_in_c_equal_the_reference():
    """DARE's Philox draws computed in C equal ``kernels.philox`` (which equals Triton's, on a GPU)
    at any offset, row and 64-bit key."""
    import numpy as np

    from dithub.kernels import clib, philox

    for seed, start, n, row in [(0, 0, 1000, 0), (2**62 + 12345, 2**32 - 7, 5000, 3), (123456789, 17, 70_001, 7)]:
        assert np.array_equal(clib.philox_draws(seed, start, n, row), philox.dare_draws(seed, start, n, row).numpy())


def test_magnitude_ranks_without_torch_are_exact():
    """``kernels.rank`` (radix select, introselect, counting in a sampled bracket, the histogram)
    against a sort, with ties, zeros and NaNs."""
    import numpy as np

    from dithub.kernels import rank

    rng = np.random.default_rng(9)
    for n in (7, 1 << 12, (1 << 21) + 1024):
        a = rng.standard_normal(n).astype(np.float32)
        a[::3] = np.round(a[::3])  # ties in magnitude, zeros
        ordered = np.sort(np.abs(a))[::-1]
        for k in sorted({1, max(1, n // 5), n // 2 + 1, n}):
            assert rank.kth_largest_abs(a, k) == ordered[k - 1] == rank.by_histogram(a, k), (n, k)
        a[::101] = np.nan  # NaNs rank above every value
        assert rank.kth_largest_abs(a, n // 2) == np.sort(np.abs(a[~np.isnan(a)]))[::-1][n // 2 - 1 - len(a[::101])]


def test_a_cli_merge_of_task_vectors_imports_no_torch(repo):
    from dithub.algorithms.merge import arrays

    code = ("import sys; from dithub.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, *[m for m in ('torch', 'transformers', 'peft', 'scipy') if m in sys.modules])")
    for method in arrays.METHODS:
        args = ["-C", str(repo.path), "merge", "t/0", "t/1", "t/2", "--method", method, "--into", f"cli/{method}"]  # DARE: Philox, its default
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


def test_a_rank_cap_takes_the_torch_path(lora_repo):
    plan = plan_merge(lora_repo, ["a", "b"], "concat", {"rank": 2})
    assert not elementwise.applies(plan, [lora_repo.tree_of("a"), lora_repo.tree_of("b")], "cpu")


@pytest.mark.parametrize("method, params", [("mean_ba", {}), ("concat", {"weights": [0.7, 1.6]})])
def test_whole_tensors_are_averaged_as_torch_averages_them(lora_repo, vit, method, params):
    """Adapters with saved modules (a classifier head): the heads' mean without torch is torch's."""
    r = Repo.init(lora_repo.path.parent / f"heads-{method}")
    r.commit(vit.adapter_dir, "with a head", branch="x")
    r.commit(vit.adapter2_dir, "with a head", branch="y")
    plan = plan_merge(r, ["x", "y"], method, params)
    trees = [r.tree_of("x"), r.tree_of("y")]
    assert elementwise.applies(plan, trees, "cpu")
    assert elementwise.run(r, plan, trees) == run_merge(r, plan, device="cpu")


def test_the_mean_of_many_inputs_sums_in_torchs_order():
    """``torch.stack(xs).mean(0)`` sums in torch's cascade (groups of 32 columns row by row, the rest
    in four interleaved partial sums; levels of accumulators past 16 rows): the numpy mean equals it
    for 1-40 inputs and widths around every boundary, weighted too; a single entry and a NaN are
    left to torch (None)."""
    import numpy as np

    from dithub.algorithms.merge import arrays
    from dithub.ops.merge.run import mean_of

    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 40):
        for width in (2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 40, 64, 100, 257, 1000):
            xs = [torch.randn(width, generator=g) * 10 ** float(torch.randint(-4, 4, (1,), generator=g)) for _ in range(n)]
            xs[0][:2] = -0.0
            for weights in (None, [float(torch.rand(1, generator=g)) * 3 - 1 for _ in range(n)]):
                got = arrays.mean_of([x.numpy() for x in xs], weights)
                assert np.array_equal(got.view(np.uint32), mean_of(xs, weights).numpy().view(np.uint32)), (n, width)
    threads = torch.get_num_threads()
    try:  # wide tensors, whose columns torch splits between threads: the order per column holds
        for count in (1, 3):
            torch.set_num_threads(count)
            xs = [torch.randn(100_003, generator=g) for _ in range(9)]
            assert np.array_equal(arrays.mean_of([x.numpy() for x in xs], None).view(np.uint32),
                                  mean_of(xs, None).numpy().view(np.uint32))
    finally:
        torch.set_num_threads(threads)
    assert arrays.mean_of([np.ones(1, np.float32)] * 3, None) is None
    assert arrays.mean_of([np.array([np.inf, 1], np.float32), np.array([-np.inf, 1], np.float32)], None) is None


def test_a_cli_merge_of_lora_adapters_imports_no_torch(lora_repo, vit):
    """Adapters of factors only, and adapters that save a classifier head whole."""
    heads = Repo.init(lora_repo.path.parent / "heads-cli")
    heads.commit(vit.adapter_dir, "with a head", branch="a")
    heads.commit(vit.adapter2_dir, "with a head", branch="b")
    code = ("import sys; from dithub.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, *[m for m in ('torch', 'transformers', 'peft', 'scipy') if m in sys.modules])")
    for repo in (lora_repo, heads):
        for method in elementwise.LORA_METHODS:
            args = ["-C", str(repo.path), "merge", "a", "b", "--method", method, "--into", f"cli/{method}"]
            out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
            assert out.split()[-1] == "0", out


@pytest.mark.parametrize("weights", [None, [1.5, -0.5, 2.0]])
def test_sums_propagate_the_nans_torch_propagates(weights):
    """Where several inputs of an entry are NaN (of different signs and payloads), the sum's NaN is
    the one torch's CPU additions give, in its vectorized loop and its tail alike (numpy's own
    loops pick by position, and differently in the two)."""
    import numpy as np

    from dithub.algorithms.merge import arrays
    from dithub.algorithms.merge.primitives import running_sum

    patterns = [0x7FC00001, 0xFFFF0000, 0x7FC00000, 0xFFC00000, 0x7F800001]  # the last one signaling
    n = 37  # a vectorized body and a scalar tail
    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(n, generator=g) for _ in range(3)]
    for j in range(n):  # every combination of NaN or not, per entry, and patterns
        for i, x in enumerate(xs):
            if (j >> i) & 1:
                x.view(torch.int32)[j] = torch.tensor(patterns[(j + i) % len(patterns)], dtype=torch.int64).to(torch.int32)
    xs[0][32], xs[1][32] = float("inf"), -float("inf")  # a NaN no input held
    expected = running_sum(xs, torch.float32, weights).numpy()
    got = arrays.running_sum([x.numpy() for x in xs], weights)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_a_head_whose_mean_is_nan_is_averaged_by_torch(tmp_path, vit, monkeypatch):
    """Where the heads' mean holds NaN (∞ − ∞ here), torch computes that tensor, so its NaN pattern
    is torch's; the rest stays on numpy, and the tree equals the torch path's."""
    import shutil

    from safetensors.torch import load_file

    r = Repo.init(tmp_path / "repo")
    for sign, (src, branch) in zip((1, -1), ((vit.adapter_dir, "x"), (vit.adapter2_dir, "y"))):
        d = tmp_path / branch
        shutil.copytree(src, d)
        tensors = load_file(str(d / "adapter_model.safetensors"))
        head = next(k for k in tensors if "lora_" not in k and tensors[k].dim() == 2)
        tensors[head][0, 0] = sign * float("inf")
        save_file(tensors, str(d / "adapter_model.safetensors"))
        r.commit(d, branch, branch=branch)
    plan = plan_merge(r, ["x", "y"], "mean_ba")
    trees = [r.tree_of("x"), r.tree_of("y")]
    assert elementwise.applies(plan, trees, "cpu")
    asked = []
    original = elementwise._torch_mean
    monkeypatch.setattr(elementwise, "_torch_mean", lambda xs, w: asked.append(len(xs)) or original(xs, w))
    assert elementwise.run(r, plan, trees) == run_merge(r, plan, device="cpu")
    assert asked == [2]  # the head alone
