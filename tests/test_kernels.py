"""Merge kernels: exact selection on large tensors, and compiled passes equal to the plain ones bit for bit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dithub.kernels import clib, native
from dithub.kernels.fused import COMPILE_MIN_NUMEL
from dithub.kernels.select import kth_largest_abs
from dithub.kernels.select import by_histogram
from dithub.algorithms.merge import full_space, get_method

N = (1 << 21) + 1024  # above the partition, sampling and compile thresholds


def _by_sort(x: torch.Tensor, k: int) -> float:
    return float(torch.kthvalue(x.abs().reshape(-1).float(), x.numel() - k + 1).values)


@pytest.mark.parametrize("k", [1, 5, 1000, N // 5, N // 2, N - 3, N])
def test_sampled_select_is_exact_on_heavy_tails(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(N, generator=g) * torch.rand(N, generator=g).pow(8) * 1e3
    assert float(kth_largest_abs(x, k)) == _by_sort(x, k)


def test_sampled_select_is_exact_with_many_ties_and_zeros():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, (N,), generator=g).float()  # 7 distinct values, 1/7 zeros
    for k in (1, N // 7, N // 3, N - N // 7, N - N // 7 + 1, N):
        assert float(kth_largest_abs(x, k)) == _by_sort(x, k), k


@pytest.mark.parametrize("kernels", ["fused", "plain"])  # the counting search, and the chunked pass without a compiler
def test_select_is_exact_on_half_precision_and_defers_nans_to_the_histogram(kernels, monkeypatch):
    monkeypatch.setenv("DITHUB_KERNELS", kernels)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(N, generator=g) * 1e-3).to(torch.bfloat16)  # 2^16 patterns: heavy ties
    for k in (1, 77, N // 5, N - 1):
        assert float(kth_largest_abs(x, k)) == _by_sort(x, k), k
    y = torch.randn(N, generator=g)
    y[::1000] = float("nan")  # counting cannot place NaNs; the histogram ranks them above every value
    for k in (N // 5, N // 2):
        assert torch.equal(kth_largest_abs(y, k), by_histogram(y, k))


def test_small_tensors_select_exactly_with_nans_ranked_as_the_histogram_ranks_them():
    """Up to 2M entries: one partition of the magnitudes (numpy's introselect)."""
    g = torch.Generator().manual_seed(5)
    for n in (1, 9, 4000, 1 << 14, (1 << 21) - 5):
        x = torch.randn(n, generator=g).to(torch.bfloat16)
        for k in sorted({1, max(1, n // 5), n}):
            assert float(kth_largest_abs(x, k)) == _by_sort(x, k)
        if n > 9:
            x[::9] = float("nan")
            for k in (1, n // 9 + 1, n):
                assert torch.equal(kth_largest_abs(x, k).isnan(), by_histogram(x, k).isnan())
                assert torch.equal(kth_largest_abs(x, k).nan_to_num(), by_histogram(x, k).nan_to_num())


def test_select_drops_zeros_before_partitioning():
    """Mostly-zero tensors (an embedding whose rows a task never touched, Core Space's triangular
    cores): the k-th largest is 0 when fewer than k entries are nonzero, else ranked among them."""
    g = torch.Generator().manual_seed(6)
    n = 300_000
    for zero_share in (0.02, 0.5, 0.98):
        x = torch.randn(n, generator=g) * (torch.rand(n, generator=g) >= zero_share)
        x[:5] = -0.0
        nonzero = int((x != 0).sum())
        for k in sorted({1, nonzero // 2, nonzero, nonzero + 1, n}):
            assert float(kth_largest_abs(x, k)) == _by_sort(x, k), (zero_share, k)


def test_thresholds_of_many_small_inputs_in_one_call_equal_one_by_one():
    """TIES' thresholds of small CPU inputs (Core Space's cores) by one native radix select over the
    stacked rows: each the k-th largest magnitude by sort, with zeros, ±inf, NaNs, mixed dtypes."""
    from dithub.algorithms.merge.primitives import magnitude_thresholds

    g = torch.Generator().manual_seed(12)
    for trial in range(40):
        n = int(torch.randint(1, 20_000, (1,), generator=g))
        xs = [torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.5) for _ in range(5)]
        xs[1] = xs[1].bfloat16()
        xs[2][::7] = float("inf") if trial % 2 else -float("inf")
        if trial % 3 == 0:
            xs[3][::5] = float("nan")
        for density in (0.01, 0.2, 0.9):
            k = max(1, round(density * n))
            got = magnitude_thresholds(xs, density)
            expected = torch.tensor([_by_sort(x, k) for x in xs])
            assert torch.equal(got.isnan(), expected.isnan()), (trial, density)
            assert torch.equal(got.nan_to_num(), expected.nan_to_num()), (trial, density)


def test_histogram_fallback_is_exact():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5000, generator=g).half()
    for k in (1, 17, 2500, 5000):
        assert float(by_histogram(x, k)) == _by_sort(x, k)


def test_select_rejects_k_out_of_range():
    with pytest.raises(ValueError):
        kth_largest_abs(torch.ones(4), 5)


KERNEL_CASES = [
    ("task_arithmetic", {"alpha": 0.3}),
    ("ties", {"density": 0.2, "lam": 0.7}),
    ("dare", {"p": 0.5, "combine": "ta", "lam": 1.0, "seed": 3}),
    ("dare", {"p": 0.5, "combine": "ties", "lam": 1.0, "seed": 3}),
    ("dare", {"p": 0.5, "combine": "ties", "lam": 1.0, "seed": 3, "mask": "float32", "rng": "torch"}),
    ("dare", {"p": 0.5, "combine": "ta", "seed": 3, "rng": "torch"}),
    ("breadcrumbs", {"beta": 0.1, "gamma": 0.01, "alpha": 0.3}),
    ("magmax", {"alpha": 1.0}),
    ("ties", {"density": 0.2, "convention": "mergekit"}),
    ("ties", {"density": 0.2, "convention": "round"}),
    ("dare", {"p": 0.5, "combine": "ties", "seed": 3, "convention": "mergekit"}),
    ("breadcrumbs", {"convention": "round"}),
    ("magmax", {"tie": "first"}),
]
FUSED = ("_ties_kernel", "_dare_ta_kernel", "_dare_ties_kernel", "_band_kernel", "_magmax_kernel")


def _inputs(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    vs = [torch.randn(n, generator=g) * (i + 1) for i in range(3)]
    vs[1] = vs[1].half()  # a mixed-precision input is cast inside the kernel (chunk by chunk)
    vs[2][::11] = 0.0
    vs[0][::13] = vs[1][::13].float()
    vs[2][::13] = -2 * vs[1][::13].float()  # zero sums with entries of both signs, ties in magnitude
    return vs


@pytest.mark.parametrize("n", [COMPILE_MIN_NUMEL + 4097, 3 * native._CHUNK + 5])
def test_native_kernels_equal_plain_ones_bit_for_bit(monkeypatch, n):
    if not native.available():
        pytest.fail("the native kernels did not build: CI has a C compiler, so this is a bug")
    calls = []
    for kernel in FUSED:
        fn = getattr(full_space, kernel)
        monkeypatch.setattr(full_space, kernel, lambda *a, fn=fn, kernel=kernel: calls.append(kernel) or fn(*a))
    for vs in (_inputs(n), [-v for v in _inputs(n)]):  # either majority sign
        for name, params in KERNEL_CASES:
            fused = get_method(name)(vs, key="w", **params)
            monkeypatch.setenv("DITHUB_KERNELS", "plain")
            plain = get_method(name)(vs, key="w", **params)
            monkeypatch.delenv("DITHUB_KERNELS")
            assert torch.equal(fused.view(torch.int32), plain.view(torch.int32)), name
    assert set(calls) == set(FUSED)


def test_native_kernels_build_once_and_fall_back_without_a_compiler(monkeypatch, tmp_path):
    """A cache per source and compiler; no compiler: one warning, and merges run the plain kernels."""
    monkeypatch.setenv("DITHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(clib, "_state", {"threads": None})
    assert native.available()
    built = list((tmp_path / "cache" / "kernels").glob("merge_kernels-*.so"))
    assert len(built) == 1
    monkeypatch.setattr(clib, "_state", {"threads": None})

    def no_compiler_run(*args, **kwargs):
        raise AssertionError(f"the warm path ran {args[0]}")

    with monkeypatch.context() as m:  # issue 24: loading from the cache invokes no compiler, not even `cc --version`
        m.setattr(clib.subprocess, "run", no_compiler_run)
        assert native.available() and list((tmp_path / "cache" / "kernels").glob("*.so")) == built  # reused
    vs = _inputs(COMPILE_MIN_NUMEL + 7)
    expected = get_method("ties")(vs)
    monkeypatch.setattr(clib, "_state", {"threads": None})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("DITHUB_CACHE", str(tmp_path / "other"))
    warnings = []
    monkeypatch.setattr(clib._log, "warning", lambda msg, *args: warnings.append(msg % args))
    assert not native.available()
    got = get_method("ties")(vs)
    assert len(warnings) == 1 and "native merge kernels unavailable" in warnings[0] and "no-such-cc" in warnings[0]
    assert torch.equal(got, expected)


@pytest.mark.slow
def test_compiled_kernels_equal_plain_ones_bit_for_bit():
    """Off the CPU the plain kernels are compiled by torch.compile; its CPU backend checks that
    the kernels compile to the plain bits (the GPU tests compare the device path)."""
    try:
        torch.compile(full_space._ties_kernel.plain, dynamic=True)([torch.ones(8)], torch.zeros(1), torch.tensor(1.0),
                                                                   torch.tensor(True))
    except Exception:  # noqa: BLE001
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ compiler)")
    vs = [v.float() for v in _inputs(COMPILE_MIN_NUMEL + 4097)]
    args = {
        "_ties_kernel": (torch.tensor([0.5, 1.0, 2.0]), torch.tensor(0.7), torch.tensor(False)),
        "_magmax_kernel": (torch.tensor(1.0), torch.tensor(True)),
        "_band_kernel": (torch.tensor([0.1, 0.2, 0.3]), torch.tensor([2.0, 3.0, float("inf")]), torch.tensor(0.3)),
    }
    for kernel, extra in args.items():
        plain = getattr(full_space, kernel).plain
        compiled, expected = torch.compile(plain, dynamic=True)(vs, *extra), plain(vs, *extra)
        if not isinstance(compiled, tuple):  # the electing kernels return (merged, counts)
            compiled, expected = (compiled,), (expected,)
        for got, want in zip(compiled, expected):
            assert torch.equal(got, want), kernel



def test_dithub_kernels_plain_runs_the_plain_functions_and_other_values_are_refused(monkeypatch):
    """DITHUB_KERNELS=plain (it was DITHUB_COMPILE=0) runs the plain torch functions: the native
    kernels are not called; a value other than fused or plain is an error naming both."""
    from dithub.errors import BadInput

    called = []
    monkeypatch.setattr(native, "ties", lambda *a: called.append(1))
    vs = _inputs(COMPILE_MIN_NUMEL + 7)
    monkeypatch.setenv("DITHUB_KERNELS", "plain")
    get_method("ties")(vs)
    assert not called
    monkeypatch.setenv("DITHUB_KERNELS", "off")
    with pytest.raises(BadInput, match="DITHUB_KERNELS is 'off', not one of fused, plain"):
        get_method("ties")(vs)


def test_kernels_build_seals_the_library_and_never_loads_one_it_cannot_trust(monkeypatch, tmp_path, cli):
    """``dithub kernels build`` builds ahead of any merge; the library is sealed with its hash and
    checked before a load: a changed file is built again, a cache others may write is refused."""
    import json
    import os

    import xxhash

    monkeypatch.setenv("DITHUB_CACHE", str(tmp_path / "cache"))
    res = cli("kernels build --json")
    assert res.code == 0, res.err
    path = Path(json.loads(res.out)["library"])
    assert path.is_file() and path.parent == tmp_path / "cache" / "kernels"
    assert path.with_suffix(".xxh3").read_text().strip() == xxhash.xxh3_128_hexdigest(path.read_bytes())
    path.write_bytes(b"not the library that was built")
    assert native.build() == path and path.read_bytes() != b"not the library that was built"  # rebuilt, not loaded
    os.chmod(path.parent, 0o777)  # a folder others could write to (a umask of 002): closed, and its library built again
    before = path.stat().st_mtime_ns
    assert native.build() == path and path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mtime_ns != before
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    res = cli("kernels build --force")
    assert res.code == 13 and "cannot be built" in res.err
