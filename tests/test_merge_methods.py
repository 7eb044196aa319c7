"""Full-space merge methods against their papers' definitions, written out independently here."""
from __future__ import annotations

import pytest
import torch

from dithub.errors import BadInput
from dithub.algorithms.merge import REGISTRY, get_method, kth_largest_abs


def _vectors(t=3, shape=(40, 30), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(t)]


def _topk_mask(v, density):
    """Top-k by magnitude via a full sort (the definition)."""
    k = max(1, round(density * v.numel()))
    flat = v.abs().flatten()
    order = torch.argsort(flat, descending=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(v.shape)


@pytest.mark.parametrize("k", [1, 2, 7, 600, 1199, 1200])
def test_kth_largest_abs_matches_sort(k):
    x = torch.randn(1200) * torch.logspace(-3, 3, 1200)
    assert kth_largest_abs(x, k) == torch.sort(x.abs(), descending=True).values[k - 1]


def test_kth_largest_abs_with_ties_and_zeros():
    x = torch.tensor([0.0, -2.0, 2.0, 1.0, 0.0, -1.0])
    assert [float(kth_largest_abs(x, k)) for k in range(1, 7)] == [2, 2, 1, 1, 0, 0]


def test_every_method_cites_a_paper_and_states_defaults():
    assert {"task_arithmetic", "ties", "dare", "breadcrumbs", "magmax"} <= set(REGISTRY)
    for m in REGISTRY.values():  # declared in the catalog, implemented in the module it names
        assert m.paper.count(".") == 1 and m.function.__module__ == f"dithub.algorithms.merge.{m.module}"
        doc = __import__(m.function.__module__, fromlist=["x"]).__doc__
        assert m.paper in doc and m.name in doc
        assert (m.device is not None) == m.device_kernel


def test_task_arithmetic_is_scaled_sum_and_linear():
    vs = _vectors()
    ta = get_method("task_arithmetic")
    torch.testing.assert_close(ta(vs, alpha=0.5), 0.5 * (vs[0] + vs[1] + vs[2]))
    ws = _vectors(seed=1)
    torch.testing.assert_close(ta([a + 2 * b for a, b in zip(vs, ws)]), ta(vs) + 2 * ta(ws))
    torch.testing.assert_close(ta(vs[:1], alpha=1.0), vs[0])


def test_ties_round_convention_matches_the_first_release_definition():
    """``convention=round`` (what merges recorded before the conventions replay with): keep the top
    round(density·n) magnitudes, + on a zero sum. The papers' conventions: test_reference_methods.py."""
    vs = _vectors(t=4)
    trimmed = [torch.where(_topk_mask(v, 0.2), v, torch.zeros_like(v)) for v in vs]
    total = sum(trimmed)
    sign = torch.where(total >= 0, 1.0, -1.0)
    num = sum(torch.where((torch.sign(t) == sign) & (t != 0), t, torch.zeros_like(t)) for t in trimmed)
    cnt = sum(((torch.sign(t) == sign) & (t != 0)).float() for t in trimmed)
    expected = 0.7 * num / cnt.clamp(min=1)
    torch.testing.assert_close(get_method("ties")(vs, lam=0.7, convention="round"), expected)


def test_ties_single_input_returns_its_trimmed_self():
    (v,) = _vectors(t=1)
    out = get_method("ties")([v], density=0.5, convention="round")
    torch.testing.assert_close(out, torch.where(_topk_mask(v, 0.5), v, torch.zeros_like(v)))
    torch.testing.assert_close(get_method("ties")([v], density=1.0), v)


def test_dare_is_seeded_per_tensor_and_unbiased():
    vs = _vectors(t=2, shape=(200, 100))
    dare = get_method("dare")
    a = dare(vs, seed=3, key="layer.0.weight")
    assert torch.equal(a, dare(vs, seed=3, key="layer.0.weight"))
    assert not torch.equal(a, dare(vs, seed=4, key="layer.0.weight"))
    assert not torch.equal(a, dare(vs, seed=3, key="layer.1.weight"))
    kept = (dare([vs[0]], seed=0, p=0.9) != 0).float().mean()
    assert abs(float(kept) - 0.1) < 0.01  # Bernoulli(1 - p) survivors
    survivors = dare([vs[0]], seed=0, p=0.9)
    nz = survivors != 0
    q = round(0.1 * 65536) / 65536  # the keep probability 16-bit draws realize exactly
    torch.testing.assert_close(survivors[nz], vs[0][nz] / q)  # rescaled by 1/q: unbiased
    mean = sum(dare([torch.ones(10_000)], seed=s, p=0.5) for s in range(200)) / 200
    assert abs(float(mean.mean()) - 1.0) < 0.01  # E[drop-and-rescale(x)] = x


def test_dare_float32_masks_are_the_first_release_rule():
    """mask=float32: keep where a float drawn from the per-tensor seed is ≥ p, rescale by 1/(1−p)
    (written here from torch's generator directly); what merges recorded without ``mask`` replay with."""
    from dithub.algorithms.merge.primitives import tensor_seed

    vs = _vectors(t=2, shape=(50, 40))
    out = get_method("dare")(vs, p=0.7, seed=5, key="w", mask="float32", rng="torch")
    expected = torch.zeros_like(vs[0])
    for i, v in enumerate(vs):
        keep = torch.rand(v.shape, generator=torch.Generator().manual_seed(tensor_seed(5, "w", i))) >= 0.7
        expected += torch.where(keep, v / 0.3, 0.0)
    torch.testing.assert_close(out, expected)
    assert get_method("dare").recorded({"p": 0.7}) == {"p": 0.7, "mask": "float32", "rng": "torch", "convention": "mergekit"}
    assert get_method("dare").recorded({"mask": "uint16", "rng": "philox", "convention": "paper"}) == {
        "mask": "uint16", "rng": "philox", "convention": "paper"}
    with pytest.raises(BadInput, match="parameter 'mask' of 'dare' is 'float64', not one of uint16, float32"):
        get_method("dare")(vs, mask="float64")


def test_dare_ties_combines_with_sign_election():
    vs = _vectors(t=3)
    out = get_method("dare")(vs, p=0.0, combine="ties")
    sign = torch.where(sum(vs) >= 0, 1.0, -1.0)
    agree = [(torch.sign(v) == sign) for v in vs]
    expected = sum(v * m for v, m in zip(vs, agree)) / sum(m.float() for m in agree).clamp(min=1)
    torch.testing.assert_close(out, expected)


def test_breadcrumbs_keeps_the_band_below_the_outliers():
    v = torch.arange(1, 1001, dtype=torch.float32) * torch.tensor([1.0, -1.0]).repeat(500)
    out = get_method("breadcrumbs")([v], beta=0.1, gamma=0.01, alpha=1.0)
    mags = v.abs()
    expected = torch.where((mags <= 990) & (mags > 890), v, torch.zeros_like(v))  # ranks 11..110
    torch.testing.assert_close(out, expected)


def test_magmax_picks_the_largest_magnitude():
    a = torch.tensor([1.0, -5.0, 0.5, 2.0])
    b = torch.tensor([-2.0, 3.0, 0.25, -2.0])
    torch.testing.assert_close(get_method("magmax")([a, b], alpha=1.0), torch.tensor([-2.0, -5.0, 0.5, -2.0]))
    torch.testing.assert_close(get_method("magmax")([a, b], alpha=1.0, tie="first"), torch.tensor([-2.0, -5.0, 0.5, 2.0]))


def test_parameters_are_validated():
    with pytest.raises(BadInput, match=r"no parameter 'k'.*valid parameters: density=0.2 in \(0, 1\], lam=1.0"):
        get_method("ties").params({"k": 3})
    with pytest.raises(BadInput, match="must be float"):
        get_method("ties").params({"density": "lots"})
    assert get_method("ties").params({"density": "0.5"}) == {"density": 0.5, "lam": 1.0, "convention": "paper"}
    with pytest.raises(BadInput, match="valid methods: .*ties"):
        get_method("tie")
    with pytest.raises(BadInput, match="combine"):
        get_method("dare")(_vectors(), combine="mean")


def test_cli_help_lists_every_registered_method(cli):
    res = cli("merge --help")
    assert res.code == 0 and all(name in res.out.replace("\n", " ") for name in REGISTRY)


def test_alpha_sets_each_methods_final_scale(tmp_path, cli):
    from safetensors.torch import save_file

    from dithub import Repo

    repo = Repo.init(tmp_path / "r")
    for i in range(2):
        save_file({"w": torch.randn(4, 4)}, str(tmp_path / f"t{i}.safetensors"))
        repo.commit(tmp_path / f"t{i}.safetensors", "t", branch=f"t/{i}")
    expected = {"task_arithmetic": "alpha", "ties": "lam", "dare": "lam", "tsv": "alpha", "iso_cts": "alpha"}
    for method, param in expected.items():
        assert get_method(method).scale_param == param
        res = cli(f"merge t/0 t/1 --method {method} --alpha 0.25 --into m/{method}", cwd=repo.path)
        assert res.code == 0, res.err
        assert repo.commit_object(f"m/{method}").op.params[param] == 0.25
    assert get_method("mean_ba").scale_param is None
    res = cli("merge t/0 t/1 --method mean_ba --alpha 2", cwd=repo.path)
    assert res.code == BadInput.exit_code and "no final scale" in res.err


def test_svd_methods_merge_matrices_only_and_others_are_averaged():
    from dithub.algorithms.merge import REGISTRY

    for name in ("tsv", "iso_c", "iso_cts"):
        m = REGISTRY[name]
        assert m.applies_to((4, 3)) and not m.applies_to((1, 1, 64)) and not m.applies_to((8, 1, 2, 2))
    assert REGISTRY["ties"].applies_to((8, 1, 2, 2)) and REGISTRY["ties"].applies_to((5,))  # elementwise: every tensor
    assert not REGISTRY["ties"].applies_to((5,), "mean")  # as merges recorded before issue 18 ran


def test_svd_falls_back_to_fp64_when_fp32_does_not_converge(monkeypatch):
    """LAPACK's fp32 SVD can fail on an ill-conditioned residual (seen in Iso-CTS on a 16,000 x 768
    embedding); the merge then decomposes in fp64 instead of stopping with a traceback."""
    from dithub.algorithms.merge import primitives

    real = torch.linalg.svd
    calls = []

    def flaky(x, full_matrices=True):
        calls.append(x.dtype)
        if x.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge (simulated)")
        return real(x, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    vs = _vectors(t=3, shape=(12, 8))
    out = get_method("iso_cts")(vs, common=0.5, alpha=1.0)
    assert torch.float64 in calls and out.dtype == torch.float32
    monkeypatch.setattr(torch.linalg, "svd", real)
    torch.testing.assert_close(out, get_method("iso_cts")([v.double() for v in vs], common=0.5, alpha=1.0).float(),
                               rtol=1e-4, atol=1e-5)
    u, s, vh = primitives.svd(vs[0])
    torch.testing.assert_close((u * s) @ vh, vs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask", ["uint16", "float32"])
def test_dare_chunked_equals_whole(monkeypatch, mask):
    """DARE merges large tensors chunk by chunk (the draws of one chunk at a time); the generator's
    stream drawn in pieces equals it drawn whole, so the result does not depend on the chunk size."""
    from dithub.algorithms.merge import full_space
    from dithub.algorithms.merge.primitives import draw

    for n, k in [(1003, 400), (77, 36)]:
        whole = draw(torch.Generator().manual_seed(5), n, 0.7, mask)
        g = torch.Generator().manual_seed(5)
        assert torch.equal(whole, torch.cat([draw(g, k, 0.7, mask), draw(g, n - k, 0.7, mask)]))
    vs = _vectors(t=3, shape=(37, 29))  # 1,073 entries: the last chunk is short and not a multiple of four
    for combine in ("ta", "ties"):
        ref = get_method("dare")(vs, p=0.6, combine=combine, seed=2, key="w", mask=mask, rng="torch")
        monkeypatch.setattr(full_space, "DARE_CHUNK", 64)
        assert torch.equal(get_method("dare")(vs, p=0.6, combine=combine, seed=2, key="w", mask=mask, rng="torch"), ref)
        monkeypatch.setattr(full_space, "DARE_CHUNK", 1 << 21)


def test_one_registry_shape_with_capabilities():
    """Merge, rebase and revert methods are Algorithms in a Registry (issue 19); OPCM is registered,
    its sequential nature a capability the executors read (not its name)."""
    from dithub.algorithms.params import Algorithm, Registry
    from dithub.algorithms.rebase import REGISTRY as REBASES
    from dithub.algorithms.revert import REGISTRY as REVERTS

    for registry in (REGISTRY, REBASES, REVERTS):
        assert isinstance(registry, Registry) and all(isinstance(a, Algorithm) for a in registry.values())
    assert REGISTRY.having("sequential") == ["opcm"] and get_method("opcm").scale_param is None
    assert REGISTRY.having("device-kernel") == ["dare", "magmax", "task_arithmetic", "ties"]  # the Triton kernels
    assert "needs-labels" in REBASES["gradfix"].capabilities and "needs-inputs" in REBASES["theseus"].capabilities
    with pytest.raises(BadInput, match="unknown rebase method 'x'.*"):
        REBASES.lookup("x")
    opcm = get_method("opcm")
    assert opcm.params({"alpha": "0.3"}) == {"alpha": 0.3, "project": "modules"} and opcm.recorded({"alpha": 0.5})["project"] == "matrices"
