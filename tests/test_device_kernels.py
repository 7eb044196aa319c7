"""The device path of a merge: Philox draws, Triton kernels, chunked device merges, the pipeline.

Triton kernels run here in Triton's interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1
without a GPU); the same tests marked ``gpu`` run them compiled on CUDA.
"""
from __future__ import annotations

import threading

import pytest
import torch

from dithub.errors import BadInput
from dithub.kernels.philox import dare_draws, philox4x32, philox_c0
from dithub.kernels.pipeline import stream
from dithub.algorithms.merge import get_method
from dithub.algorithms.merge.primitives import tensor_seed

triton = pytest.importorskip("triton", reason="Triton is a test dependency on Linux x86_64")

MASK = 0xFFFFFFFF


def _words(*values: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor([v], dtype=torch.int64) for v in values)


@pytest.mark.parametrize(("counter", "key", "expected"), [
    # Random123's known-answer tests for Philox4x32-10 (kat_vectors: philox4x32 10)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_matches_the_reference_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32(_words(*counter), key)) == expected


def _triton_philox_c0(seed: int, start: int, n: int, row: int) -> torch.Tensor:
    import triton.language as tl

    @triton.jit
    def words(out_ptr, numel, start, seed, ROW: tl.constexpr, BLOCK: tl.constexpr):
        cols = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        j = cols + start
        lo = (j & 0xFFFFFFFF).to(tl.uint32)
        c0, _, _, _ = tl.philox(seed, lo, (j >> 32).to(tl.uint32), lo * 0 + ROW, lo * 0)
        tl.store(out_ptr + cols, c0.to(tl.int64), mask=cols < numel)

    out = torch.empty(n, dtype=torch.int64)
    words[(triton.cdiv(n, 256),)](out, n, start, seed, ROW=row, BLOCK=256)
    return out


@pytest.mark.parametrize(("seed", "start", "row"), [(0, 0, 0), (2**40 + 12345, 2**32 - 300, 3), (2**63 - 2, 7, 1)])
def test_torch_philox_draws_what_triton_draws(seed, start, row):
    """Across the 2^32 boundary of the entry counter and with 64-bit keys."""
    assert torch.equal(philox_c0(seed, start, 1000, row), _triton_philox_c0(seed, start, 1000, row))


def test_philox_draws_do_not_depend_on_chunking():
    whole = dare_draws(9, 0, 5000, 2)
    pieces = torch.cat([dare_draws(9, 0, 1234, 2), dare_draws(9, 1234, 5000 - 1234, 2)])
    assert torch.equal(whole, pieces)
    assert not torch.equal(whole, dare_draws(9, 0, 5000, 3))  # each input its own stream


def _inputs(n=3, m=5000, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, generator=g).to(dtype) for _ in range(n)]


def _dare_by_definition(xs, p, seed, key, combine="ta", lam=1.0):
    """DARE with Philox draws, written from the definition: entry j of input i is kept where the top
    16 bits of Philox(counter (j lo, j hi, i, 0), key = the tensor's seed) fall in the lowest
    round(65536(1-p)) levels; kept entries are divided by that fraction; sum (or TIES)."""
    levels = round(65536 * (1 - p))
    tseed = tensor_seed(seed, key, 0)
    j = torch.arange(xs[0].numel(), dtype=torch.int64)
    kept = []
    for i, x in enumerate(xs):
        c0 = philox4x32((j & MASK, j >> 32, torch.full_like(j, i), torch.zeros_like(j)), (tseed & MASK, tseed >> 32))[0]
        keep = (c0 >> 16) < levels
        kept.append(torch.where(keep, x.double() / (levels / 65536), 0.0))
    if combine == "ta":
        return lam * sum(kept)
    return lam * _ties_combine(kept)


def _ties_combine(kept):
    stack = torch.stack(kept)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(stack) == sign) & (stack != 0)
    return (stack * agree).sum(0) / agree.sum(0).clamp(min=1)


@pytest.mark.parametrize("combine", ["ta", "ties"])
def test_dare_with_philox_draws_on_the_cpu_matches_its_definition(combine):
    xs = _inputs()
    out = get_method("dare")(xs, p=0.7, seed=4, rng="philox", combine=combine, key="w")
    expected = _dare_by_definition(xs, 0.7, 4, "w", combine)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(out == 0, expected == 0)


def test_dare_rejects_an_unknown_rng_and_philox_with_float_draws():
    with pytest.raises(BadInput, match="parameter 'rng' of 'dare' is 'mt', not one of torch, philox"):
        get_method("dare")(_inputs(), rng="mt", key="w")
    with pytest.raises(BadInput, match="rng=philox draws 16-bit uniforms"):
        get_method("dare")(_inputs(), rng="philox", mask="float32", key="w")


# ---------------------------------------------------------------- Triton kernels (interpreted here)

@pytest.fixture(scope="module")
def tk():
    from dithub.kernels import triton_merge

    return triton_merge


@pytest.mark.parametrize("n", [1, 3, 5])
def test_triton_task_arithmetic_is_the_weighted_sum(tk, n):
    xs = _inputs(n, m=9001)
    w = torch.linspace(0.5, 1.5, n)
    out = tk.task_arithmetic(torch.stack(xs), w)
    torch.testing.assert_close(out.double(), sum(float(w[i]) * xs[i].double() for i in range(n)), rtol=1e-6, atol=1e-6)


def test_triton_kernels_read_half_precision_inputs(tk):
    xs = _inputs(3, m=3000, dtype=torch.bfloat16)
    out = tk.task_arithmetic(torch.stack(xs), torch.ones(3))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), sum(x.double() for x in xs), rtol=1e-6, atol=1e-6)


def test_triton_ties_is_trim_elect_disjoint_mean(tk):
    xs = _inputs(4, m=7000, seed=2)
    thresholds = torch.tensor([0.5, 1.0, 0.2, 3.0])
    out = tk.ties(torch.stack(xs), thresholds, 0.8)
    kept = [torch.where(x.abs() >= t, x, 0.0).double() for x, t in zip(xs, thresholds)]
    torch.testing.assert_close(out.double(), 0.8 * _ties_combine(kept), rtol=1e-6, atol=1e-6)


def test_triton_magmax_takes_the_largest_magnitude_earliest_on_ties(tk):
    xs = _inputs(3, m=4000, seed=3)
    xs[2][:10] = -xs[0][:10]  # ties in magnitude at the top: the first input wins
    xs[1][:10] = 0.5 * xs[0][:10]
    out = tk.magmax(torch.stack(xs), 2.0)
    stack = torch.stack(xs)
    idx = stack.abs().argmax(0)  # torch's argmax returns the first maximal index
    assert torch.equal(out, 2.0 * stack.gather(0, idx[None])[0])
    assert torch.equal(out[:10], 2.0 * xs[0][:10])


def test_triton_magmax_takes_the_later_input_on_ties_as_the_reference(tk):
    """tie=later (the default, danielm1405/magmax's ``>=``): the last input of largest magnitude wins."""
    xs = _inputs(3, m=4000, seed=3)
    xs[2][:10] = -xs[0][:10]
    xs[1][:10] = 0.5 * xs[0][:10]
    out = tk.magmax(torch.stack(xs), 0.5, later=True)
    assert torch.equal(out[:10], 0.5 * xs[2][:10])
    assert torch.equal(out, get_method("magmax")(xs, alpha=0.5))


@pytest.mark.parametrize("combine", ["ta", "ties"])
def test_triton_dare_keeps_the_entries_the_cpu_keeps(tk, combine):
    """Same seed, same mask on both paths: Philox drawn in the kernel, and in torch on the CPU."""
    xs = _inputs(3, m=6000, seed=5)
    from dithub.algorithms.merge.primitives import dare_limit

    limit, keep_prob = dare_limit(0.6, "uint16")
    out = tk.dare(torch.stack(xs), seed=tensor_seed(11, "w", 0), offset=0, limit=limit, keep_prob=keep_prob,
                  lam=1.0, combine=combine)
    cpu = get_method("dare")(xs, p=0.6, seed=11, rng="philox", combine=combine, key="w")
    assert torch.equal(out == 0, cpu == 0)
    torch.testing.assert_close(out, cpu, rtol=1e-6, atol=1e-6)
    offset = tk.dare(torch.stack(xs)[:, 2500:], seed=tensor_seed(11, "w", 0), offset=2500, limit=limit,
                     keep_prob=keep_prob, lam=1.0, combine=combine)
    assert torch.equal(offset, out[2500:])  # a chunk draws what the whole tensor draws there


# ---------------------------------------------------------------- DeviceMerge: staging and chunking

def _merger(tk, budget=None):
    from dithub.kernels.device import DeviceMerge

    return DeviceMerge(torch.device("cpu"), tk, budget=budget)


@pytest.mark.parametrize("budget", [None, 3000])
@pytest.mark.parametrize(("method", "params"), [
    ("task_arithmetic", {"alpha": 0.4}),
    ("ties", {"density": 0.3, "lam": 1.2, "convention": "round"}),
    ("magmax", {"tie": "first"}),
    ("magmax", {}),
    ("dare", {"p": 0.5, "seed": 2, "rng": "philox", "combine": "ties", "convention": "mergekit"}),
    ("dare", {"p": 0.5, "seed": 2}),
])
def test_device_merge_equals_the_torch_method_whole_or_in_chunks(tk, method, params, budget):
    """A budget of 3,000 bytes forces chunks of a few hundred entries; TIES' thresholds are still
    those of the whole tensor (trimming per chunk would keep another set of entries)."""
    xs = [x.reshape(60, 100) for x in _inputs(3, m=6000, seed=7)]
    merger = _merger(tk, budget)
    staged = merger.stage(xs)
    assert (staged.stacked is None) == (budget is not None)
    out = merger.merge(get_method(method), params, staged, "layer.weight")
    ref = get_method(method)(xs, key="layer.weight", **params)
    assert out.shape == (60, 100)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    if method == "dare":
        assert torch.equal(out == 0, ref == 0)


@pytest.mark.parametrize(("method", "params"), [
    ("ties", {"density": 0.3}), ("dare", {"p": 0.5, "seed": 2, "rng": "philox", "combine": "ties"})])
def test_the_papers_rules_run_the_torch_method_on_the_device(tk, method, params):
    """The Triton kernels implement the first release's rules; the papers' (the defaults: the whole
    tensor's majority sign on zero sums, MagMax's later input on a tie) run as the torch method on
    the device, bit for bit, and a tensor that does not fit is refused with the way out."""
    xs = [x.reshape(60, 100) for x in _inputs(3, m=6000, seed=7)]
    for x in xs[1:]:
        x.view(-1)[:50] = -xs[0].view(-1)[:50]  # zero sums and ties in magnitude
    merger = _merger(tk)
    out = merger.merge(get_method(method), params, merger.stage(xs), "layer.weight")
    assert torch.equal(out, get_method(method)(xs, key="layer.weight", **params))
    small = _merger(tk, budget=3000)
    with pytest.raises(BadInput, match="convention=round"):
        small.merge(get_method(method), params, small.stage(xs), "layer.weight")


def test_device_merge_checks_dare_parameters_as_the_cpu_does(tk):
    xs = [x.reshape(60, 100) for x in _inputs(3, m=6000)]
    merger = _merger(tk)
    with pytest.raises(BadInput, match="rng=philox draws 16-bit uniforms"):
        merger.merge(get_method("dare"), {"rng": "philox", "mask": "float32"}, merger.stage(xs), "w")
    with pytest.raises(BadInput, match="parameter 'combine' of 'dare' is 'magmax', not one of ta, ties"):
        merger.merge(get_method("dare"), {"combine": "magmax"}, merger.stage(xs), "w")


def test_device_merge_refuses_a_whole_tensor_method_that_does_not_fit(tk):
    xs = [x.reshape(60, 100) for x in _inputs(3, m=6000)]
    merger = _merger(tk, budget=3000)
    with pytest.raises(BadInput, match="tensor 'layer.weight': its 3 inputs need .* MiB on cpu"):
        merger.merge(get_method("tsv"), {}, merger.stage(xs), "layer.weight")
    out = _merger(tk).merge(get_method("tsv"), {}, _merger(tk).stage(xs), "layer.weight")  # fits: the torch method on the device
    torch.testing.assert_close(out, get_method("tsv")(xs, key="layer.weight"))


def test_a_merge_through_the_device_path_stores_what_the_cpu_path_stores(tk, tmp_path):
    """Repo-level: the pipelined, chunked device path against the plain CPU path, tensor by tensor."""
    from safetensors.torch import save_file

    from conftest import commit_task_vectors
    from dithub import Repo
    from dithub.formats import to_torch
    from dithub.ops.merge.plan import plan_merge
    from dithub.ops.merge.run import run_merge

    def make(path, i):
        g = torch.Generator().manual_seed(i)
        tv = {f"l{k}.weight": torch.randn(40, 30, generator=g) for k in range(4)} | {"l0.bias": torch.randn(40, generator=g)}
        save_file(tv, str(path))
        return tv

    repo = Repo.init(tmp_path / "r")
    commit_task_vectors(repo, tmp_path, make)
    for method, params in [("ties", {"convention": "round"}), ("dare", {"rng": "philox", "seed": 5}), ("task_arithmetic", {})]:
        plan = plan_merge(repo, [repo.resolve(f"task/{i}") for i in range(3)], method, params)
        cpu = repo.store.read_tree(run_merge(repo, plan))
        dev = repo.store.read_tree(run_merge(repo, plan, merger=_merger(tk, budget=2000)))
        assert set(cpu.tensors) == set(dev.tensors)
        for name, entry in cpu.tensors.items():
            a = to_torch(repo.store.read_tensor(entry.id))
            b = to_torch(repo.store.read_tensor(dev.tensors[name].id))
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the pipeline

@pytest.mark.parametrize("depth", [0, 1, 2])
def test_pipeline_stores_every_item_in_order(depth):
    stored = []
    stream(range(20), lambda k: k * 10, lambda k, v: v + k, lambda k, v: stored.append((k, v)), depth=depth)
    assert stored == [(k, 11 * k) for k in range(20)]


def test_pipeline_loads_the_next_item_while_one_computes():
    """Computing item k waits (up to 5 s) for the load of item k+1 to start: only an overlapped
    pipeline lets it; a sequential one would record a miss for every item."""
    started = {k: threading.Event() for k in range(6)}
    missed = []

    def load(k):
        started[k].set()
        return k

    def compute(k, v):
        if k + 1 < 6 and not started[k + 1].wait(5):
            missed.append(k)
        return v

    stream(range(6), load, compute, lambda k, v: None, depth=1)
    assert missed == []


@pytest.mark.parametrize("stage", ["load", "compute", "store"])
def test_pipeline_raises_the_first_failure_and_stops(stage):
    stored, loaded = [], []

    def fail_at(name, k):
        if name == stage and k == 3:
            raise BadInput(f"{name} failed at {k}")

    def load(k):
        fail_at("load", k)
        loaded.append(k)
        return k

    def compute(k, v):
        fail_at("compute", k)
        return v

    def store(k, v):
        fail_at("store", k)
        stored.append(k)

    before = threading.active_count()
    with pytest.raises(BadInput, match=f"{stage} failed at 3"):
        stream(range(100), load, compute, store, depth=1)
    assert stored == list(range(len(stored))) and len(stored) <= 3  # in order, none past the failure
    if stage == "store":
        assert stored == [0, 1, 2]
    # nothing much loaded past the failure: with one item between stages, when item 3 fails at most
    # 4 waits to be stored, 5 is being computed, 6 waits and 7 is being loaded
    assert max(loaded) <= 7
    assert threading.active_count() == before  # every stage thread has finished


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.parametrize("combine", ["ta", "ties"])
def test_cuda_dare_with_philox_keeps_what_the_cpu_keeps(combine):
    xs = _inputs(4, m=1 << 20, seed=9)
    from dithub.kernels.device import DeviceMerge, triton_kernels

    dev = torch.device("cuda")
    merger = DeviceMerge(dev, triton_kernels(dev))
    assert merger.kernels is not None
    params = {"p": 0.9, "seed": 3, "rng": "philox", "combine": combine}
    out = merger.merge(get_method("dare"), params, merger.stage(xs), "w").cpu()
    cpu = get_method("dare")(xs, key="w", **params)
    assert torch.equal(out == 0, cpu == 0)
    torch.testing.assert_close(out, cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize(("method", "params"), [("task_arithmetic", {}), ("ties", {"convention": "round"}),
                                                ("magmax", {"tie": "first"}), ("dare", {"seed": 1})])
def test_cuda_chunked_merge_matches_the_cpu(method, params):
    from dithub.kernels.device import DeviceMerge, triton_kernels

    xs = [x.reshape(1024, 1024) for x in _inputs(4, m=1 << 20, seed=10)]
    dev = torch.device("cuda")
    merger = DeviceMerge(dev, triton_kernels(dev), budget=1 << 20)  # 64 chunks
    out = merger.merge(get_method(method), params, merger.stage(xs), "w").cpu()
    torch.testing.assert_close(out, get_method(method)(xs, key="w", **params), rtol=1e-5, atol=1e-6)


def test_a_merge_on_the_device_kernels_records_it_and_replays_only_there(tk, tmp_path, monkeypatch):
    """The device kernels agree with the CPU to rounding, not bit for bit: an op they ran records
    ``execution: device``, and replaying it (or an exact revert) without a CUDA device is
    refused with what to do, rather than producing other bits. CPU merges record nothing new."""
    from safetensors.torch import save_file

    from conftest import commit_task_vectors
    from dithub import Repo
    from dithub.ops.merge.plan import plan_merge
    from dithub.ops.merge.run import replay_merge, run_merge
    from dithub.store import Commit, Op

    def make(path, i):
        g = torch.Generator().manual_seed(i)
        tv = {"l.weight": torch.randn(40, 30, generator=g)}
        save_file(tv, str(path))
        return tv

    repo = Repo.init(tmp_path / "r")
    commit_task_vectors(repo, tmp_path, make)
    heads = [repo.resolve(f"task/{i}") for i in range(3)]
    plan = plan_merge(repo, heads, "task_arithmetic", {})
    report: dict = {}
    tree = run_merge(repo, plan, merger=_merger(tk), report=report)
    assert report == {"execution": "device"}
    cpu_report: dict = {}
    run_merge(repo, plan, report=cpu_report)
    assert cpu_report == {}
    recorded = Commit(tree, heads, None, "t", 0.0, "m", Op("merge", "task_arithmetic", {**plan.op.params, **report}, heads))
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="ran on the device path.*replay it on a machine with a CUDA device"):
            replay_merge(repo, recorded)
