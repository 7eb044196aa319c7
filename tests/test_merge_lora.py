"""LoRA-native merges: exact against the definition and against peft's `cat`."""
from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from conftest import lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import BadInput, IncompatibleAdapters
from dithub.formats import lora_modules, scaling, to_torch


def _delta(repo, rev, module):
    tree = repo.tree_of(rev)
    m = lora_modules(tree.tensors)[module]
    load = lambda k: to_torch(repo.store.read_tensor(tree.tensors[k].id)).double()  # noqa: E731
    return scaling(tree.config, module) * load(m.b_key) @ load(m.a_key)


def test_mean_ba_is_the_mean_of_the_products(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "mean_ba")
    tree = repo.tree_of("main")
    assert tree.kind == "lora" and tree.config["r"] == 6 and tree.config["lora_alpha"] == 6
    for module in lora_modules(tree.tensors):
        expected = (_delta(repo, "class/a", module) + _delta(repo, "class/b", module)) / 2
        torch.testing.assert_close(_delta(repo, "main", module), expected, rtol=1e-5, atol=1e-6)


def test_concat_equals_peft_cat(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "concat", {"alpha": "0.5"})
    out = repo.export("main", tmp_path / "merged")

    peft_model = PeftModel.from_pretrained(tiny_vit(), adapters / "a", adapter_name="a")
    peft_model.load_adapter(adapters / "b", adapter_name="b")
    peft_model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "cat", combination_type="cat")
    peft_model.set_adapter("cat")
    ours = PeftModel.from_pretrained(tiny_vit(), out).eval()
    pixels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(pixel_values=pixels).logits, peft_model.eval()(pixel_values=pixels).logits,
                                   rtol=1e-5, atol=1e-5)


def test_lora_native_methods_refuse_task_vectors(tmp_path):
    from safetensors.torch import save_file

    repo = Repo.init(tmp_path / "r")
    for i in range(2):
        save_file({"w": torch.ones(2, 2) * i}, str(tmp_path / f"t{i}.safetensors"))
        repo.commit(tmp_path / f"t{i}.safetensors", "t", branch=f"t/{i}")
    with pytest.raises(BadInput, match="LoRA-native methods \\(concat, core_space, ema, mean_ba\\) take LoRA adapters"):
        repo.merge(["t/0", "t/1"], "mean_ba")


def test_full_space_merge_of_loras_expands_to_delta_w(vit, tmp_path):
    from safetensors.torch import load_file

    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit-v1", vit.base_dir)
    repo.commit(vit.adapter_dir, "a", branch="class/a", base="vit-v1")
    repo.commit(vit.adapter2_dir, "b", branch="class/b", base="vit-v1")
    repo.merge(["class/a", "class/b"], "task_arithmetic", {"alpha": "0.5"})
    tree = repo.tree_of("main")
    assert tree.kind == "task_vector" and repo.commit_object("main").base == repo.commit_object("vit-v1").tree
    base = load_file(str(vit.base_dir / "model.safetensors"))
    saved = [load_file(str(d / "adapter_model.safetensors")) for d in (vit.adapter_dir, vit.adapter2_dir)]
    cfg = {"r": 4, "lora_alpha": 8}
    for module in lora_modules(repo.tree_of("class/a").tensors):
        key = f"base_model.model.{module}"
        expected = 0.5 * sum(2.0 * s[f"{key}.lora_B.weight"] @ s[f"{key}.lora_A.weight"] for s in saved)
        assert scaling(cfg, module) == 2.0
        got = to_torch(repo.store.read_tensor(tree.tensors[module + ".weight"].id))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    head_w = to_torch(repo.store.read_tensor(tree.tensors["classifier.weight"].id))
    torch.testing.assert_close(head_w, 0.5 * sum(s["base_model.model.classifier.weight"] - base["classifier.weight"] for s in saved))
    head_b = to_torch(repo.store.read_tensor(tree.tensors["classifier.bias"].id))
    torch.testing.assert_close(head_b, sum(s["base_model.model.classifier.bias"] - base["classifier.bias"] for s in saved) / 2)
    merged = load_file(str(repo.export_merged("main", None, tmp_path / "full") / "model.safetensors"))
    torch.testing.assert_close(merged["classifier.bias"], base["classifier.bias"] + head_b)


def test_full_space_lora_merge_with_saved_modules_needs_a_base(vit, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(vit.adapter_dir, "a", branch="class/a")
    repo.commit(vit.adapter2_dir, "b", branch="class/b")
    with pytest.raises(IncompatibleAdapters, match="--base"):
        repo.merge(["class/a", "class/b"], "ties")


def _factors(seed, shapes=((4, 30, 20), (2, 30, 20), (3, 30, 20))):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(r, n, generator=g, dtype=torch.float64), torch.randn(m, r, generator=g, dtype=torch.float64),
             0.5 + i) for i, (r, m, n) in enumerate(shapes)]


def test_core_space_task_arithmetic_equals_full_space():
    from dithub.algorithms.merge import get_method

    factors = _factors(0)
    a, b = get_method("core_space")(factors, key="m")
    full = get_method("task_arithmetic")([s * fb @ fa for fa, fb, s in factors])
    assert a.shape == (9, 20) and b.shape == (30, 9)  # rank Σ r_t
    rel = (b.double() @ a.double() - full).norm() / full.norm()
    assert rel < 1e-5


@pytest.mark.parametrize("linear,bases", [("concat", "implicit"), ("core", "implicit"), ("core", "explicit")])
def test_core_space_task_arithmetic_factors_by_the_linear_rule(linear, bases):
    """'concat': the stacked factors [0.3 s_t A_t], [B_t], written here from the definition; 'core'
    with explicit bases: B = U_ref M and A = V_refᵀ with orthonormal V_ref; with implicit bases:
    B = [s_t B_t] and A = R_B⁻¹ M R_A⁻ᵀ [A_t]. All have the product 0.3 Σ s_t B_t A_t."""
    from dithub.algorithms.merge import get_method

    factors = _factors(2)
    a, b = get_method("core_space")(factors, key="m", linear=linear, bases=bases)
    full = 0.3 * sum(s * fb @ fa for fa, fb, s in factors)
    torch.testing.assert_close((b @ a).double(), full, rtol=1e-5, atol=1e-6)  # float32 results
    stacked_a = torch.cat([0.3 * s * fa for fa, _fb, s in factors])
    stacked_b = torch.cat([fb for _fa, fb, _s in factors], dim=1)
    if linear == "concat":
        torch.testing.assert_close(a.double(), stacked_a, rtol=1e-6, atol=0)
        torch.testing.assert_close(b.double(), stacked_b, rtol=1e-7, atol=0)
    elif bases == "explicit":
        torch.testing.assert_close((a @ a.T).double(), torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-6)
        assert not torch.allclose(a.double(), stacked_a)
    else:
        scaled_b = torch.cat([s * fb for _fa, fb, s in factors], dim=1)
        torch.testing.assert_close(b.double(), scaled_b, rtol=1e-7, atol=0)


def _core_bases_by_hand(factors):
    """Orthonormal bases of the stacks by Gram-Schmidt in float64 (signs: positive R diagonal)."""
    def gram_schmidt(x):
        cols = []
        for j in range(x.shape[1]):
            v = x[:, j].clone()
            for q in cols:
                v -= (q @ v) * q
            cols.append(v / v.norm())
        return torch.stack(cols, dim=1)

    b_stack = torch.cat([s * fb.double() for _fa, fb, s in factors], dim=1)
    a_stack = torch.cat([fa.double() for fa, _fb, _s in factors], dim=0)
    return gram_schmidt(b_stack), gram_schmidt(a_stack.T)


@pytest.mark.parametrize("spread", [0.0, 0.9])  # independent and correlated modules
def test_core_space_ties_in_triangular_bases_equals_ties_on_cores_in_those_bases(spread, monkeypatch):
    """The triangular variant (``bases=implicit``, dithub's first Core Space; the paper's SVD bases:
    test_reference_methods.py) from its definition: project on the QR bases of the stacks (made here
    by Gram-Schmidt in float64), TIES the cores by the first release's rule, map back. Input t's core is
    zero outside its top-left 3(t+1) x 3(t+1) block (B_t and A_tᵀ lie in the spans of the first
    3(t+1) basis vectors); those entries are snapped to 0 here, since TIES counts any nonzero entry that
    agrees in sign, and the implicit bases give exact zeros there (explicit ones give rounding
    noise, which TIES then counts: the reason they are not the default)."""
    from dithub.algorithms.merge import get_method

    g = torch.Generator().manual_seed(11)
    shared_b, shared_a = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(3, 25, generator=g, dtype=torch.float64)
    factors = [((1 - spread) * torch.randn(3, 25, generator=g, dtype=torch.float64) + spread * shared_a,
                (1 - spread) * torch.randn(40, 3, generator=g, dtype=torch.float64) + spread * shared_b, 0.5 + t)
               for t in range(4)]
    u, v = _core_bases_by_hand(factors)
    cores = [u.T @ (s * fb) @ fa @ v for fa, fb, s in factors]
    for t, c in enumerate(cores[:-1]):
        outside = torch.ones_like(c, dtype=torch.bool)
        outside[:3 * (t + 1), :3 * (t + 1)] = False
        assert c[outside].abs().max() < 1e-12 * c.abs().max()
        c[outside] = 0.0
    k = round(0.2 * 144)
    kept = []
    for c in cores:
        threshold = c.abs().flatten().sort(descending=True).values[k - 1]
        kept.append(torch.where(c.abs() >= threshold, c, 0.0))
    stacked = torch.stack(kept)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(stacked) == elected
    merged = (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
    expected = u @ merged @ v.T
    householder = []
    qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda x, **kw: householder.append(x.shape) or qr(x, **kw))
    a, b = get_method("core_space")(factors, key="m", rule="ties", bases="implicit", convention="round")
    assert len(householder) == 1  # one stack's R by Cholesky of its Gram, the other's by Householder
    torch.testing.assert_close((b @ a).double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_core_space_implicit_bases_fall_back_on_rank_deficient_stacks():
    """Two identical modules (and a zero B, as LoRA initializes it) leave R singular: the bases are
    formed as ``explicit`` does, and the merge is the same as it."""
    from dithub.algorithms.merge import get_method

    factors = _factors(6)
    for stack in (factors + [factors[0]], factors + [(factors[0][0], torch.zeros_like(factors[0][1]), 1.0)]):
        for params in ({"rule": "ties"}, {"linear": "core"}, {"rank": 3}):
            got = get_method("core_space")(stack, key="m", bases="implicit", **params)
            ref = get_method("core_space")(stack, key="m", bases="explicit", **params)
            torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_core_space_shortcut_only_where_it_is_the_same_merge():
    """TIES, a truncated rank, and more stacked rank than the layer has all take the core path."""
    from dithub.algorithms.merge import get_method

    core = get_method("core_space")
    factors = _factors(3)
    for params in ({"rule": "ties"}, {"rank": 4}):
        a, _b = core(factors, key="m", **params)
        a_ref, _ = core(factors, key="m", linear="core", **params)
        torch.testing.assert_close(a, a_ref, rtol=0, atol=0)
    wide = _factors(4, shapes=((6, 8, 30), (5, 8, 30)))  # Σ r = 11 > m = 8
    a, b = core(wide, key="m")
    a_ref, b_ref = core(wide, key="m", linear="core")
    torch.testing.assert_close((a, b), (a_ref, b_ref), rtol=0, atol=0)
    with pytest.raises(BadInput, match="parameter 'linear' of 'core_space' is 'qr', not one of concat, core"):
        core(factors, key="m", linear="qr")
    with pytest.raises(BadInput, match="parameter 'bases' of 'core_space' is 'qr', not one of svd, implicit, explicit"):
        core(factors, key="m", rule="ties", bases="qr")


def test_core_space_never_forms_an_m_by_n_matrix(monkeypatch):
    from dithub.algorithms.merge import get_method

    m, n = 3000, 2000  # an m x n float matrix would be 24 MB; every allowed tensor here is far smaller
    factors = [(torch.randn(4, n), torch.randn(m, 4), 1.0) for _ in range(3)]
    limit = 12 * max(m, n) * 8  # a few (dim x Σr) factors
    real_matmul = torch.Tensor.__matmul__

    def guarded(x, y):
        out = real_matmul(x, y)
        assert out.numel() * out.element_size() <= limit, f"allocated {tuple(out.shape)}"
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", guarded)
    a, b = get_method("core_space")(factors, key="m", rule="ties")
    assert a.shape == (12, n) and b.shape == (m, 12)


def test_core_space_rank_truncation_is_the_best_low_rank_core():
    from dithub.algorithms.merge import get_method

    factors = _factors(1)
    a, b = get_method("core_space")(factors, key="m", rank=3)
    full = sum(s * fb @ fa for fa, fb, s in factors) * 0.3
    u, s, vh = torch.linalg.svd(full, full_matrices=False)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    torch.testing.assert_close((b @ a).double(), best, rtol=1e-4, atol=1e-5)


def test_core_space_merge_commit_on_real_adapters(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "core_space", {"rule": "task_arithmetic"})
    tree = repo.tree_of("main")
    assert tree.kind == "lora" and tree.config["r"] == 6
    for module in lora_modules(tree.tensors):
        expected = 0.3 * (_delta(repo, "class/a", module) + _delta(repo, "class/b", module))
        torch.testing.assert_close(_delta(repo, "main", module), expected, rtol=1e-4, atol=1e-6)


def test_ema_blends_the_shared_b_and_keeps_the_new_a():
    """DitHub's code (chiara-cap/DitHub, ``groundingdino/util/task_memory.py`` ``merge_B``): at the end
    of a task the shared B ← 0.3·B_prev + 0.7·B_new; a class's A is blended (0.3·warm-up A + 0.7·old A)
    only as the start of its training (``lora_pool.py`` ``enable_per_class``), so the trained A_new
    is the module's A. ``a_rule=blend`` (ops recorded before) blends A as well."""
    from dithub.algorithms.merge import get_method

    g = torch.Generator().manual_seed(3)
    old = (torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g), 2.0)
    new = (torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g), 2.0)
    a, b = get_method("ema")([old, new])
    assert torch.equal(a, new[0])
    torch.testing.assert_close(b, 2.0 * (0.7 * new[1] + 0.3 * old[1]))  # the scale moves into B (output scale 1)
    a, b = get_method("ema")([old, new], a_rule="blend")
    torch.testing.assert_close(a, 0.7 * new[0] + 0.3 * old[0])
    torch.testing.assert_close(b, 2.0 * (0.7 * new[1] + 0.3 * old[1]))
    assert get_method("ema").recorded({"beta": 0.6}) == {"beta": 0.6, "a_rule": "blend"}
    with pytest.raises(BadInput, match="exactly two"):
        get_method("ema")([old, new, new])
    with pytest.raises(BadInput, match="equal LoRA scales"):
        get_method("ema")([old, (new[0], new[1], 3.0)])


def test_checkout_of_several_classes_composes_without_a_commit(adapters, tmp_path, cli):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    refs_before = repo.refs.as_dict()
    res = cli(f"checkout class/a class/b -o {tmp_path}/ab", cwd=repo.path)
    assert res.code == 0 and repo.refs.as_dict() == refs_before
    composed = PeftModel.from_pretrained(tiny_vit(), tmp_path / "ab").eval()
    repo.merge(["class/a", "class/b"], "mean_ba", into="ref")
    committed = PeftModel.from_pretrained(tiny_vit(), repo.export("ref", tmp_path / "ref")).eval()
    pixels = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(composed(pixel_values=pixels).logits, committed(pixel_values=pixels).logits)
    assert cli("checkout class/a class/b", cwd=repo.path).code == BadInput.exit_code


def _peft_delta(model, adapter, module):
    layer = model.get_submodule("base_model.model." + module)
    return layer.scaling[adapter] * layer.lora_B[adapter].weight.double() @ layer.lora_A[adapter].weight.double()


def test_core_space_truncation_equals_peft_svd_and_documents_peft_linear(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "core_space", {"rank": "4"})  # task arithmetic (α = 0.3), best rank 4
    model = PeftModel.from_pretrained(tiny_vit(), adapters / "a", adapter_name="a")
    model.load_adapter(adapters / "b", adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [0.3, 0.3], "svd", combination_type="svd", svd_rank=4)
    for module in lora_modules(repo.tree_of("main").tensors):
        torch.testing.assert_close(_delta(repo, "main", module), _peft_delta(model, "svd", module), rtol=1e-4, atol=1e-6)
    # peft's "linear" is not Σ w B A: it needs equal ranks and scales A and B by √w separately
    lora_adapter(tiny_vit(), tmp_path / "c", seed=13, r=4, alpha=8)
    model.load_adapter(tmp_path / "c", adapter_name="c")
    model.add_weighted_adapter(["a", "c"], [0.3, 0.3], "linear", combination_type="linear")
    module = next(iter(lora_modules(repo.tree_of("main").tensors)))
    ta = 0.3 * (_peft_delta(model, "a", module) + _peft_delta(model, "c", module))
    assert not torch.allclose(_peft_delta(model, "linear", module), ta, rtol=1e-3)


def test_lora_and_task_vector_merge_through_their_base(vit, tmp_path):
    from safetensors.torch import load_file, save_file

    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit-v1", vit.base_dir)
    repo.commit(vit.adapter_dir, "lora", branch="class/a", base="vit-v1")
    base = load_file(str(vit.base_dir / "model.safetensors"))
    saved = load_file(str(vit.adapter_dir / "adapter_model.safetensors"))
    g = torch.Generator().manual_seed(5)
    # a task vector on the checkpoint's own names, changing the same weights as the LoRA
    names = {k: k.replace("attention.attention.query", "attention.q_proj").replace("attention.attention.value", "attention.v_proj")
             .replace("vit.encoder.layer.", "vit.layers.") for k in base}
    changed = {k for k, v in names.items() if f"base_model.model.{v[:-len('.weight')]}.lora_A.weight" in saved
               or k.startswith("classifier.")}
    tau = {k: 0.01 * torch.randn(base[k].shape, generator=g) for k in changed}
    save_file(tau, str(tmp_path / "tv.safetensors"))
    repo.commit(tmp_path / "tv.safetensors", "tv", branch="domain/tv", base="vit-v1")
    repo.merge(["class/a", "domain/tv"], "task_arithmetic", {"alpha": "1.0"})
    tree = repo.tree_of("main")
    assert set(tree.tensors) == changed  # keyed by checkpoint names
    key = next(k for k in changed if k.endswith("query.weight"))
    module = names[key][: -len(".weight")]
    lora = 2.0 * saved[f"base_model.model.{module}.lora_B.weight"] @ saved[f"base_model.model.{module}.lora_A.weight"]
    got = to_torch(repo.store.read_tensor(tree.tensors[key].id))
    torch.testing.assert_close(got, lora + tau[key], rtol=1e-5, atol=1e-6)


def test_full_space_ties_equals_peft_ties_svd_before_truncation(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    # peft trims to exactly int(density·n) by topk and elects + on a zero sum: mergekit's convention
    repo.merge(["class/a", "class/b"], "ties", {"density": "0.25", "convention": "mergekit"})
    tree = repo.tree_of("main")
    model = PeftModel.from_pretrained(tiny_vit(), adapters / "a", adapter_name="a")
    model.load_adapter(adapters / "b", adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "ties_svd", combination_type="ties_svd", svd_rank=32, density=0.25)
    for module in lora_modules(repo.tree_of("class/a").tensors):
        ours = to_torch(repo.store.read_tensor(tree.tensors[module + ".weight"].id)).double()
        torch.testing.assert_close(ours, _peft_delta(model, "ties_svd", module), rtol=1e-4, atol=1e-5)


def test_breadcrumbs_without_outliers_equals_peft_magnitude_prune_svd(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "breadcrumbs", {"beta": "0.25", "gamma": "0", "alpha": "1"})
    tree = repo.tree_of("main")
    model = PeftModel.from_pretrained(tiny_vit(), adapters / "a", adapter_name="a")
    model.load_adapter(adapters / "b", adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "mp", combination_type="magnitude_prune_svd", svd_rank=32,
                               density=0.25)
    for module in lora_modules(repo.tree_of("class/a").tensors):
        ours = to_torch(repo.store.read_tensor(tree.tensors[module + ".weight"].id)).double()
        torch.testing.assert_close(ours, _peft_delta(model, "mp", module), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("combine, peft_fn", [("ta", "dare_linear"), ("ties", "dare_ties")])
def test_dare_matches_peft_dare_svd_in_distribution(combine, peft_fn):
    """peft's dare_linear_svd / dare_ties_svd prune the expanded ΔW with masks from torch's global
    generator, so single draws cannot be compared; their distributions can: over many seeds the
    mean and the per-entry variance of both agree (and, for the linear rule, equal Σ ΔW and
    Σ ΔW²·p/(1−p)), and the chance that an entry comes out zero is the same."""
    from peft.utils import merge_utils

    from dithub.algorithms.merge import get_method

    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(6, 2, generator=g) @ torch.randn(2, 5, generator=g) for _ in range(3)]  # rank-2 ΔW = B·A
    p, draws = 0.5, 3000
    dare = get_method("dare")
    ours = torch.stack([dare(deltas, p=p, combine=combine, lam=1.0, seed=s, key="w") for s in range(draws)]).double()
    theirs = []
    for s in range(draws):
        torch.manual_seed(s)
        theirs.append(getattr(merge_utils, peft_fn)(deltas, torch.ones(3), density=1 - p))
    theirs = torch.stack(theirs).double()
    se = torch.sqrt((ours.var(0) + theirs.var(0)) / draws)
    assert ((ours.mean(0) - theirs.mean(0)).abs() <= 5 * se + 1e-9).all()
    torch.testing.assert_close(ours.var(0), theirs.var(0), rtol=0.2, atol=1e-6)
    assert abs(float((ours == 0).double().mean() - (theirs == 0).double().mean())) < 0.02
    if combine == "ta":
        total = sum(d.double() for d in deltas)
        assert ((ours.mean(0) - total).abs() <= 5 * torch.sqrt(ours.var(0) / draws) + 1e-9).all()
        torch.testing.assert_close(ours.var(0), sum(d.double() ** 2 for d in deltas) * p / (1 - p), rtol=0.2, atol=1e-6)


def test_core_space_passes_the_inner_rules_parameters_and_alpha(adapters, tmp_path, cli):
    """-p density=… reaches Core Space's inner TIES (validated against TIES' own definition), and
    --alpha sets the inner rule's final scale (issue 18, point 5)."""
    from dithub.ops.merge.run import replay_merge

    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "core_space", {"rule": "ties", "density": "0.5"}, into="d5")
    repo.merge(["class/a", "class/b"], "core_space", {"rule": "ties", "density": "0.9"}, into="d9")
    commit = repo.commit_object("d5")
    assert commit.op.params["density"] == 0.5 and commit.op.params["lam"] == 1.0
    assert replay_merge(repo, commit) == commit.tree
    module = next(iter(lora_modules(repo.tree_of("d5").tensors)))
    assert not torch.allclose(_delta(repo, "d5", module), _delta(repo, "d9", module))  # the density reached TIES
    res = cli(["merge", "class/a", "class/b", "--method", "core_space", "--alpha", "0.5", "--into", "half"], cwd=repo.path)
    assert res.code == 0, res.err
    for module in lora_modules(repo.tree_of("half").tensors):  # task arithmetic (the default rule) at α = 0.5
        expected = 0.5 * (_delta(repo, "class/a", module) + _delta(repo, "class/b", module))
        torch.testing.assert_close(_delta(repo, "half", module), expected, rtol=1e-4, atol=1e-6)
    res = cli(["merge", "class/a", "class/b", "--method", "core_space", "-p", "rule=ties", "-p", "alpha=2"], cwd=repo.path)
    assert res.code == 3 and "'alpha'" in res.err and "density" in res.err  # ties has no alpha: its own parameters listed
    res = cli(["merge", "class/a", "class/b", "--method", "core_space", "-p", "rule=ties", "-p", "density=0"], cwd=repo.path)
    assert res.code == 3 and "(0, 1]" in res.err


def test_mean_ba_of_modules_sharing_b_keeps_rank_r():
    """DitHub's layout: one B per layer shared by the classes, one A per class; the mean of the
    products is then B · mean(s A_c), of rank r (issue 18, point 7). Different B's still stack."""
    from dithub.algorithms.merge import get_method

    g = torch.Generator().manual_seed(0)
    b = torch.randn(12, 4, generator=g)
    a_s = [torch.randn(4, 10, generator=g) for _ in range(3)]
    a, b_out = get_method("mean_ba")([(x, b, 2.0) for x in a_s], key="m")
    assert a.shape == (4, 10) and b_out.shape == (12, 4)
    expected = sum(2.0 * b @ x for x in a_s) / 3
    torch.testing.assert_close(b_out @ a, expected, rtol=1e-5, atol=1e-6)
    a2, _ = get_method("mean_ba")([(x, b, 2.0) for x in a_s], key="m", shared_b="stack")  # as recorded before
    assert a2.shape == (12, 10)
    other = [(x, torch.randn(12, 4, generator=g), 2.0) for x in a_s]
    assert get_method("mean_ba")(other, key="m")[0].shape == (12, 10)


def test_dithub_is_cited_by_its_first_author():
    from dithub.algorithms.merge import lora_space

    assert "Cappellino et al., arXiv 2503.09271" in lora_space.__doc__ and "Cazzato" not in lora_space.__doc__
