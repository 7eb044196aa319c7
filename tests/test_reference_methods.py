"""dithub's merge methods against the independent implementations in ``tests/reference/``.

Inputs are built without near-ties at the trim thresholds (distinct magnitudes), so the kept
masks compare exactly; where a convention decides ties, inputs with many equal magnitudes check
its tie rule. Shapes 1-D, 2-D and 3-D; N = 2, 3, 8; fp32 and bf16.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from reference import core_space as ref_core_space
from reference import magmax as ref_magmax
from reference import mergekit_gta, ties_merging

from dithub.algorithms.merge import get_method

SHAPES = [(37,), (12, 9), (4, 5, 6)]
COUNTS = [2, 3, 8]
DTYPES = [torch.float32, torch.bfloat16]


def distinct(n_inputs: int, shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Inputs whose entries have pairwise distinct magnitudes within each input, exactly
    representable in ``dtype`` (bf16: 8 significant bits, so values m/128 · 2^e, m in 128..255)."""
    g = torch.Generator().manual_seed(seed)
    numel = torch.Size(shape).numel()
    levels = torch.tensor([m / 128 * 2.0 ** e for e in range(-4, 5) for m in range(128, 256)], dtype=torch.float64)
    out = []
    for _ in range(n_inputs):
        mags = levels[torch.randperm(len(levels), generator=g)[:numel]]
        signs = torch.where(torch.rand(numel, generator=g) < 0.5, -1.0, 1.0).double()
        out.append((mags * signs).reshape(shape).to(dtype))
    return out


def tied(n_inputs: int, numel: int, seed: int = 0) -> list[torch.Tensor]:
    """Inputs of small integers: many equal magnitudes (and exact zero sums)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(-3, 4, (numel,), generator=g).float() for _ in range(n_inputs)]


def assert_same(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert torch.equal(got != 0, want != 0), "kept entries differ"
    if dtype == torch.float32:
        torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=0)
    else:  # the reference computes in bf16's values widened to fp32; dithub too: one rounding of the output
        torch.testing.assert_close(got.bfloat16().float(), want.float().bfloat16().float(), rtol=2 ** -7, atol=0)


def test_reference_modules_share_no_code_with_dithub():
    for path in Path(__file__).with_name("reference").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not any(n.split(".")[0] == "dithub" for n in names), path.name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_ties_follows_the_papers_code(shape, n_inputs, dtype):
    vs = distinct(n_inputs, shape, dtype, seed=n_inputs)
    for density in (0.2, 0.3, 0.5):
        got = get_method("ties")(vs, density=density, lam=0.9)
        assert_same(got, ties_merging.ties(vs, density, lam=0.9), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_ties_convention_mergekit_follows_mergekit(shape, n_inputs, dtype):
    vs = distinct(n_inputs, shape, dtype, seed=10 + n_inputs)
    for density in (0.2, 0.3, 0.5):
        got = get_method("ties")(vs, density=density, lam=0.9, convention="mergekit")
        assert_same(got, mergekit_gta.ties(vs, density, lam=0.9), dtype)


def test_ties_conventions_differ_in_the_count_they_keep():
    """n = 10 at density 0.3: the paper's code keeps ≥ the 7th smallest magnitude (4 entries),
    mergekit exactly int(3.0…) = 3, the first release round(3.0…) = 3 by threshold."""
    v = torch.arange(1.0, 11.0)
    kept = {c: int((get_method("ties")([v], density=0.3, convention=c) != 0).sum()) for c in ("paper", "mergekit", "round")}
    assert kept == {"paper": 4, "mergekit": 3, "round": 3}


def test_ties_gives_a_zero_sum_the_majority_sign():
    """Entry 0 sums to exactly 0 (+2 and −2); most entries sum negative, so the paper's code elects −
    there (mean of the negatives: −2) where mergekit's convention elects + (+2)."""
    a = torch.tensor([2.0, -1.0, -1.0, -1.0, 1.0])
    b = torch.tensor([-2.0, -1.0, -1.0, -1.0, 0.5])
    paper = get_method("ties")([a, b], density=1.0)
    assert float(paper[0]) == -2.0
    assert float(get_method("ties")([a, b], density=1.0, convention="mergekit")[0]) == 2.0
    torch.testing.assert_close(paper, ties_merging.ties([a, b], 1.0))
    # a tied vote (as many positive as negative sums) gives sign 0, which the reference reads as −
    c, d = torch.tensor([3.0, 1.0, -1.0]), torch.tensor([-3.0, 1.0, -1.0])
    assert float(get_method("ties")([c, d], density=1.0)[0]) == -3.0
    torch.testing.assert_close(get_method("ties")([c, d], density=1.0), ties_merging.ties([c, d], 1.0))


@pytest.mark.parametrize("n_inputs", COUNTS)
def test_ties_conventions_on_tied_magnitudes(n_inputs):
    """Many equal magnitudes: the paper's threshold keeps every tie, mergekit's count keeps exactly
    int(density·n), ties going to the lower index; both with their own sign rules."""
    vs = tied(n_inputs, 500, seed=n_inputs)
    for density in (0.1, 0.25, 0.6):
        torch.testing.assert_close(get_method("ties")(vs, density=density), ties_merging.ties(vs, density), rtol=1e-6, atol=0)
        got = get_method("ties")(vs, density=density, convention="mergekit")
        torch.testing.assert_close(got, mergekit_gta.ties(vs, density), rtol=1e-6, atol=0)


def test_ties_large_inputs_take_the_same_rule_on_the_fused_kernel():
    """Above the small-input path's size the fused kernel runs: the same conventions hold there."""
    vs = tied(3, 300_000, seed=5)
    vs[0][:10] = torch.tensor([3.0] * 10)
    vs[1][:10] = torch.tensor([-3.0] * 10)  # zero sums with both signs present
    for convention, ref in (("paper", ties_merging.ties), ("mergekit", mergekit_gta.ties)):
        got = get_method("ties")(vs, density=0.3, convention=convention)
        torch.testing.assert_close(got, ref(vs, 0.3), rtol=1e-6, atol=0)


def test_dare_ties_gives_a_zero_sum_the_majority_sign():
    a = torch.tensor([2.0, -1.0, -1.0, -1.0, 1.0])
    b = torch.tensor([-2.0, -1.0, -1.0, -1.0, 0.5])
    keeps = [torch.ones(5, dtype=torch.bool)] * 2
    got = get_method("dare")([a, b], p=0.0, combine="ties")
    torch.testing.assert_close(got, ties_merging.dare_ties([a, b], keeps, 1.0))
    assert float(get_method("dare")([a, b], p=0.0, combine="ties", convention="mergekit")[0]) == 2.0


def test_dare_ties_majority_holds_across_chunks(monkeypatch):
    """DARE merges long tensors chunk by chunk: the majority is the whole tensor's."""
    from dithub.algorithms.merge import full_space

    monkeypatch.setattr(full_space, "DARE_CHUNK", 64)
    n = 1000
    a = -torch.ones(n)
    b = -torch.ones(n)
    a[3], b[3] = 2.0, -2.0  # a zero sum in the first chunk, before the negative majority is known
    got = get_method("dare")([a, b], p=0.0, combine="ties")
    assert float(got[3]) == -2.0
    torch.testing.assert_close(got, ties_merging.dare_ties([a, b], [torch.ones(n, dtype=torch.bool)] * 2, 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_breadcrumbs_follows_mergekits_counts(shape, n_inputs, dtype):
    vs = distinct(n_inputs, shape, dtype, seed=20 + n_inputs)
    for convention in ("paper", "mergekit"):
        got = get_method("breadcrumbs")(vs, beta=0.3, gamma=0.05, alpha=0.7, convention=convention)
        assert_same(got, mergekit_gta.breadcrumbs(vs, 0.3, 0.05, alpha=0.7), dtype)


def test_breadcrumbs_mergekit_convention_breaks_ties_by_index():
    vs = tied(3, 400, seed=2)
    got = get_method("breadcrumbs")(vs, beta=0.2, gamma=0.1, alpha=1.0, convention="mergekit")
    torch.testing.assert_close(got, mergekit_gta.breadcrumbs(vs, 0.2, 0.1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_magmax_follows_the_papers_code(shape, n_inputs, dtype):
    vs = distinct(n_inputs, shape, dtype, seed=30 + n_inputs)
    vs[1].view(-1)[:3] = -vs[0].view(-1)[:3]  # equal magnitudes: the later input wins
    got = get_method("magmax")(vs)
    torch.testing.assert_close(got, ref_magmax.magmax([v.float() for v in vs]), rtol=0, atol=0)


def test_magmax_ties_and_scale_follow_the_reference_on_large_inputs():
    vs = tied(4, 300_000, seed=1)
    torch.testing.assert_close(get_method("magmax")(vs), ref_magmax.magmax(vs), rtol=0, atol=0)


def test_ops_recorded_before_the_conventions_replay_with_the_first_rules():
    from dithub.algorithms.merge.registry import recorded_params

    assert recorded_params("ties", {"density": 0.3, "lam": 1.0})["convention"] == "round"
    assert recorded_params("breadcrumbs", {"beta": 0.1})["convention"] == "round"
    assert recorded_params("dare", {"p": 0.5})["convention"] == "mergekit"
    assert recorded_params("magmax", {"alpha": 1.0})["tie"] == "first"
    assert recorded_params("core_space", {"rule": "ties", "rank": 0})["convention"] == "round"
    assert get_method("ties").params({})["convention"] == "paper"
    assert get_method("magmax").params({}) == {"alpha": 0.5, "tie": "later"}


def lora_factors(n_inputs: int, m: int = 48, n: int = 40, r: int = 4, seed: int = 0, scales: bool = True):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(r, n, generator=g), torch.randn(m, r, generator=g), 0.5 + i if scales else 2.0)
            for i in range(n_inputs)]


@pytest.mark.parametrize("m", [48, 400])  # stacks of condition ~10 (the triangular factor's SVD) and ~2 (the Gram's)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize(("rule", "params", "ref_rule"), [
    ("ties", {"density": 0.3}, lambda cores: ties_merging.ties(cores, 0.3)),
    ("magmax", {}, lambda cores: ref_magmax.magmax(cores)),
    ("breadcrumbs", {"beta": 0.3, "gamma": 0.05, "alpha": 1.0}, lambda cores: mergekit_gta.breadcrumbs(cores, 0.3, 0.05)),
])
def test_core_space_entrywise_rules_use_the_papers_svd_bases(n_inputs, rule, params, ref_rule, m):
    """An entrywise rule depends on the bases the cores are written in: the default is the paper's
    (the SVDs of the stacks), checked against the authors' formulation in float64."""
    factors = lora_factors(n_inputs, m=m, n=m, seed=n_inputs)
    a, b = get_method("core_space")(factors, key="w", rule=rule, **params)
    want = ref_core_space.core_space(factors, ref_rule)
    scale = float(want.abs().max())
    torch.testing.assert_close((b.double() @ a.double()) / scale, want / scale, rtol=0, atol=1e-4)


def test_core_space_dare_uses_the_svd_bases():
    """DARE's masks are random, so the check is of the bases: at p = 0 (keep all) with combine=ties the
    rule is TIES' election without trimming, against the reference in the paper's bases."""
    factors = lora_factors(3, seed=4)
    a, b = get_method("core_space")(factors, key="w", rule="dare", p=0.0, combine="ties")
    want = ref_core_space.core_space(factors, lambda cores: ties_merging.ties(cores, 1.0))
    scale = float(want.abs().max())
    torch.testing.assert_close((b.double() @ a.double()) / scale, want / scale, rtol=0, atol=1e-4)


def test_core_space_triangular_bases_remain_a_named_variant():
    """bases=implicit (triangular, the release before) is another algorithm for TIES: it differs from
    the paper's bases, and ops that recorded it replay with it."""
    factors = lora_factors(4, seed=9)
    svd_a, svd_b = get_method("core_space")(factors, key="w", rule="ties", density=0.3)
    tri_a, tri_b = get_method("core_space")(factors, key="w", rule="ties", density=0.3, bases="implicit")
    assert float((svd_b @ svd_a - tri_b @ tri_a).norm() / (svd_b @ svd_a).norm()) > 0.05
    assert get_method("core_space").params({})["bases"] == "svd"


@pytest.mark.parametrize("rule", ["task_arithmetic", "tsv", "iso_c", "iso_cts"])
def test_core_space_rotation_equivariant_rules_agree_in_every_basis(rule):
    """Rules that commute with rotations of the cores give the same ΔW in the SVD and triangular
    bases (so those may take the cheaper one)."""
    factors = lora_factors(3, seed=11)
    svd_a, svd_b = get_method("core_space")(factors, key="w", rule=rule, linear="core")
    tri_a, tri_b = get_method("core_space")(factors, key="w", rule=rule, linear="core", bases="explicit")
    want = ref_core_space.core_space(factors, lambda cores: get_method(rule)([c.float() for c in cores]).double())
    for a, b in ((svd_a, svd_b), (tri_a, tri_b)):
        torch.testing.assert_close((b.double() @ a.double()), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_core_space_svd_bases_on_rank_deficient_stacks():
    """Modules sharing one B (DitHub's layout) leave the B stack of rank r: the bases are formed by
    full SVDs of the stacks, as the reference does."""
    factors = lora_factors(3, seed=2)
    factors = [(a, factors[0][1], s) for a, _b, s in factors]
    a, b = get_method("core_space")(factors, key="w", rule="ties", density=0.3)
    want = ref_core_space.core_space(factors, lambda cores: ties_merging.ties(cores, 0.3))
    scale = float(want.abs().max())
    torch.testing.assert_close((b.double() @ a.double()) / scale, want / scale, rtol=0, atol=1e-4)


# -- spectral methods (float64 references; tolerance relative to the result's scale) -------------

SPECTRAL_SHAPES = [(24, 16), (16, 40), (33, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SPECTRAL_SHAPES)
def test_spectral_methods_follow_the_authors_code(shape, n_inputs, dtype):
    from reference import spectral

    g = torch.Generator().manual_seed(100 + n_inputs)
    vs = [torch.randn(shape, generator=g).to(dtype) for _ in range(n_inputs)]
    for name, ref in (("tsv", spectral.tsv), ("iso_c", spectral.iso_c), ("iso_cts", spectral.iso_cts)):
        want = ref(vs)
        got = get_method(name)(vs).double()
        bound = 1e-5 * max(shape) * float(want.abs().max())  # fp32 decompositions against fp64: grows with the size
        torch.testing.assert_close(got, want, rtol=0, atol=bound, msg=lambda m, name=name: f"{name}: {m}")


# -- DARE: random, so checked by its distribution over 1,000 seeds --------------------------------

def test_dare_is_unbiased_with_the_drop_rate_and_variance_of_its_definition():
    """DARE (arXiv 2311.03099): each entry kept with probability q = 1 − p and rescaled by 1/q, so over
    seeds the merge's mean is Σ τ_t, its per-entry variance Σ τ_t² (1 − q)/q, and a fraction p of
    each input's entries is dropped. 1,000 seeds; bounds at 5 standard errors."""
    g = torch.Generator().manual_seed(7)
    vs = [torch.randn(64, generator=g) for _ in range(2)]
    p, seeds = 0.7, 1000
    runs = torch.stack([get_method("dare")(vs, p=p, seed=s, key="w") for s in range(seeds)]).double()
    single = torch.stack([get_method("dare")(vs[:1], p=p, seed=s, key="w") for s in range(seeds)])
    q = round(65536 * (1 - p)) / 65536  # the keep probability 16-bit draws realize
    total = sum(v.double() for v in vs)
    variance = sum(v.double().square() for v in vs) * (1 - q) / q
    assert ((runs.mean(0) - total).abs() <= 5 * (variance / seeds).sqrt()).all()
    assert ((runs.var(0) / variance) - 1).abs().max() < 5 * (2 / (seeds - 1)) ** 0.5 + 0.05
    dropped = float((single == 0).double().mean())
    assert abs(dropped - (1 - q)) < 5 * (q * (1 - q) / (seeds * 64)) ** 0.5


# -- OPCM (sequential): the repository's chain against the authors' loop ---------------------------

def test_opcm_follows_the_authors_code(tmp_path):
    from reference import opcm as ref
    from safetensors.torch import save_file

    from conftest import commit_task_vectors
    from dithub import Repo

    def tv(path, seed):
        g = torch.Generator().manual_seed(seed)
        t = {"l.weight": torch.randn(12, 10, generator=g), "l.bias": torch.randn(12, generator=g),
             "conv.weight": torch.randn(4, 3, 5, generator=g)}
        save_file(t, str(path))
        return t

    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, tv)
    repo.merge(["task/0", "task/1", "task/2"], "opcm", {"alpha": "0.5"}, into="o")
    want = ref.opcm(tvs, 0.5, linear=lambda name: name == "l.weight")
    tree = repo.tree_of("o")
    for name, expected in want.items():
        entry = tree.tensors[name]
        got = torch.frombuffer(bytearray(repo.store.read_tensor(entry.id).data), dtype=torch.float32).reshape(expected.shape)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


# -- DitHub's operators -------------------------------------------------------------------------------

def test_mean_ba_and_ema_follow_the_dithub_code():
    from reference import dithub_code

    g = torch.Generator().manual_seed(3)
    b = torch.randn(12, 4, generator=g)
    a_s = [torch.randn(4, 10, generator=g) for _ in range(3)]
    a, b_out = get_method("mean_ba")([(x, b, 2.0) for x in a_s])
    torch.testing.assert_close((b_out.double() @ a.double()), dithub_code.mean_of_classes(a_s, b, 2.0), rtol=1e-5, atol=1e-6)
    old, new = (a_s[0], torch.randn(12, 4, generator=g), 2.0), (a_s[1], b, 2.0)
    a, b_out = get_method("ema")([old, new])
    torch.testing.assert_close(b_out.double(), 2.0 * dithub_code.merge_b(old[1], new[1]), rtol=1e-5, atol=1e-6)
    assert torch.equal(a, new[0])


def test_opcm_projects_only_linear_layers_weights_as_the_authors_code(tmp_path):
    """fusion_bench projects the weights of ``nn.Linear`` modules only; an embedding table is 2-D too,
    and is merged as every other parameter. With a recorded base dithub reads the module types from
    the base's model class (built on the meta device)."""
    from reference import opcm as ref
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    from dithub import Repo

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         max_position_embeddings=12)).save_pretrained(tmp_path / "bert")
    repo = Repo.init(tmp_path / "r")
    repo.base_add("bert", tmp_path / "bert")
    names = {"embeddings.word_embeddings.weight": (40, 8), "encoder.layer.0.attention.self.query.weight": (8, 8),
             "encoder.layer.0.attention.self.query.bias": (8,)}
    tvs = []
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        tvs.append({n: torch.randn(shape, generator=g) for n, shape in names.items()})
        save_file(tvs[-1], str(tmp_path / f"t{i}.safetensors"))
        repo.commit(tmp_path / f"t{i}.safetensors", f"task {i}", branch=f"task/{i}", base="bert")
    repo.merge(["task/0", "task/1", "task/2"], "opcm", {"alpha": "0.5"}, into="o")
    assert repo.commit_object("o").op.params == {"alpha": 0.5, "project": "modules"}
    want = ref.opcm(tvs, 0.5, linear=lambda name: name.endswith("query.weight"))
    tree = repo.tree_of("o")
    for name, expected in want.items():
        got = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors[name].id).data), dtype=torch.float32)
        torch.testing.assert_close(got.reshape(expected.shape).double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    every = ref.opcm(tvs, 0.5, linear=lambda name: len(names[name]) == 2)  # what projecting every 2-D tensor gives
    assert not torch.allclose(every["embeddings.word_embeddings.weight"], want["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_inputs", COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_task_arithmetic_follows_mergekit(shape, n_inputs, dtype):
    vs = distinct(n_inputs, shape, dtype, seed=40 + n_inputs)
    got = get_method("task_arithmetic")(vs, alpha=0.3)
    want = mergekit_gta.task_arithmetic([v.float() for v in vs], 0.3)
    assert_same(got, want, torch.float32)  # both sum the fp32 values of the inputs in order


def test_core_space_passes_the_convention_to_its_rule():
    """Core Space's TIES variant with convention=mergekit is mergekit's TIES on the paper's cores."""
    factors = lora_factors(3, m=400, n=400, seed=12)
    a, b = get_method("core_space")(factors, key="w", rule="ties", density=0.3, convention="mergekit")
    want = ref_core_space.core_space(factors, lambda cores: mergekit_gta.ties(cores, 0.3))
    scale = float(want.abs().max())
    torch.testing.assert_close((b.double() @ a.double()) / scale, want / scale, rtol=0, atol=1e-4)
    paper = ref_core_space.core_space(factors, lambda cores: ties_merging.ties(cores, 0.3))
    assert not torch.allclose(want, paper)  # the conventions differ here, so the check could fail
