"""Revert: undo a commit; remove an input from a merge exactly, by negation, or in the linearized regime."""
from __future__ import annotations

import json

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import commit_task_vectors, lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import BadInput, ObjectNotFound
from dithub.algorithms.merge import REGISTRY
from dithub.ops.merge.run import replay_merge
from dithub.store import Commit, DiskObjectStore


def _tv(path, seed, names=("a.weight", "b.weight", "b.bias")):
    g = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn((12, 8) if n.endswith("weight") else (12,), generator=g) for n in names}
    save_file(tensors, str(path))
    return tensors


def _tensor(repo: Repo, rev: str, name: str) -> torch.Tensor:
    entry = repo.tree_of(rev).tensors[name]
    return torch.frombuffer(bytearray(repo.store.read_tensor(entry.id).data), dtype=torch.float32).reshape(entry.shape)


@pytest.fixture
def three(tmp_path):
    repo = Repo.init(tmp_path / "r")
    return repo, commit_task_vectors(repo, tmp_path, _tv)


FULL = sorted(n for n, m in REGISTRY.items() if m.space == "full")
LORA = sorted(n for n, m in REGISTRY.items() if m.space == "lora" and n != "ema")


@pytest.mark.parametrize("method", FULL)
def test_exact_revert_equals_merging_the_rest_directly(three, method):
    repo, _ = three
    merged = repo.merge(["task/0", "task/1", "task/2"], method, into="merged")
    oid = repo.revert("task/1", from_merge="merged", branch="merged")
    direct = repo.merge(["task/0", "task/2"], method, into="direct")
    assert repo.commit_object(oid).tree == repo.commit_object(direct).tree  # bit for bit
    commit = repo.commit_object(oid)
    assert commit.parents == [merged] and commit.op.name == "revert" and commit.op.method == "exact"
    assert commit.op.params == {"from": merged, "removed": repo.resolve("task/1")}
    assert commit.message == "revert: remove task/1 from merged (exact)"


@pytest.mark.parametrize("method", LORA)
def test_exact_revert_of_lora_native_merges(tmp_path, method):
    repo = Repo.init(tmp_path / "r")
    for i in range(3):
        lora_adapter(tiny_vit(), tmp_path / f"l{i}", seed=20 + i)
        repo.commit(tmp_path / f"l{i}", f"l{i}", branch=f"class/{i}")
    repo.merge(["class/0", "class/1", "class/2"], method, into="merged")
    oid = repo.revert("class/0", from_merge="merged", branch="merged")
    direct = repo.merge(["class/1", "class/2"], method, into="direct")
    assert repo.commit_object(oid).tree == repo.commit_object(direct).tree
    assert repo.tree_of("merged").kind == "lora"


def test_exact_revert_replays_an_opcm_chain_without_the_input(three):
    repo, _ = three
    repo.merge(["task/0", "task/1", "task/2"], "opcm", into="seq")
    repo.revert("task/0", from_merge="seq", branch="seq")
    repo.merge(["task/1", "task/2"], "opcm", into="direct")
    assert repo.commit_object("seq").tree == repo.commit_object("direct").tree
    assert len(repo.log(["seq"])) == 7  # the revert on top of three opcm steps and their three inputs (parents)


def test_exact_revert_replays_a_merge_of_merges(three):
    repo, _ = three
    repo.merge(["task/0", "task/1"], "ties", into="inner")
    repo.merge(["inner", "task/2"], "task_arithmetic", into="outer")
    repo.revert("task/0", from_merge="outer", branch="outer")
    from dithub.ops.merge.plan import plan_merge
    from dithub.ops.merge.run import run_merge

    inner = run_merge(repo, plan_merge(repo, ["task/1"], "ties", min_inputs=1))  # TIES of the one input left
    repo.commit_tree(inner, "inner, directly", branch="inner-direct", parents=[])
    repo.merge(["inner-direct", "task/2"], "task_arithmetic", into="outer-direct")
    assert repo.commit_object("outer").tree == repo.commit_object("outer-direct").tree
    with pytest.raises(BadInput, match="through another merge.*--method exact"):
        repo.revert("task/0", from_merge="outer~1", method="negation", branch="outer")


def test_negation_equals_the_formula_and_refuses_non_linear_merges(three):
    repo, tvs = three
    repo.merge(["task/0", "task/1", "task/2"], "task_arithmetic", {"alpha": 0.4}, into="ta")
    oid = repo.revert("task/1", from_merge="ta", method="negation", branch="ta")
    for name in ("a.weight", "b.weight"):
        merged = 0.4 * (tvs[0][name] + tvs[1][name] + tvs[2][name])
        torch.testing.assert_close(_tensor(repo, oid, name), merged - 0.4 * tvs[1][name], rtol=0, atol=1e-6)
        torch.testing.assert_close(_tensor(repo, oid, name), 0.4 * (tvs[0][name] + tvs[2][name]), rtol=1e-5, atol=1e-5)
    # the 1-D bias was merged by the method too: negated like the weights
    torch.testing.assert_close(_tensor(repo, oid, "b.bias"), 0.4 * (tvs[0]["b.bias"] + tvs[2]["b.bias"]), rtol=1e-5, atol=1e-6)
    # a merge recorded before (no ``vectors``: its 1-D tensors averaged): the input leaves the mean, (3·m − τ)/2
    old_ta = repo.store.read_commit(repo.resolve("ta~1"))
    legacy = Commit(replay_merge(repo, replace(old_ta, op=replace(old_ta.op, params={"alpha": 0.4}))), old_ta.parents, None,
                    "t", 0.0, "recorded before", replace(old_ta.op, params={"alpha": 0.4}))
    repo.commit_tree(legacy.tree, "legacy", branch="legacy", parents=legacy.parents, base=None, op=legacy.op)
    oid_legacy = repo.revert("task/1", from_merge="legacy", method="negation", branch="legacy")
    mean = (tvs[0]["b.bias"] + tvs[1]["b.bias"] + tvs[2]["b.bias"]) / 3
    torch.testing.assert_close(_tensor(repo, oid_legacy, "b.bias"), (3 * mean - tvs[1]["b.bias"]) / 2, rtol=0, atol=1e-6)
    assert repo.commit_object(oid).op.params["alpha"] == 0.4  # the merge's own scale, by default
    repo.revert("task/2", from_merge="ta~1", method="negation", alpha=0.1, branch="ta")
    torch.testing.assert_close(_tensor(repo, "ta", "a.weight"), _tensor(repo, "ta~2", "a.weight") - 0.1 * tvs[2]["a.weight"])
    repo.merge(["task/0", "task/1", "task/2"], "ties", into="ties")
    with pytest.raises(BadInput, match="merged with ties, which is not a sum of its inputs.*--force"):
        repo.revert("task/1", from_merge="ties", method="negation", branch="ties")
    oid = repo.revert("task/1", from_merge="ties", method="negation", force=True, branch="ties")
    torch.testing.assert_close(_tensor(repo, oid, "a.weight"), _tensor(repo, "ties~1", "a.weight") - 1.0 * tvs[1]["a.weight"])


def test_revert_of_a_plain_commit(tmp_path):
    repo = Repo.init(tmp_path / "r")
    tvs = [_tv(tmp_path / f"t{i}.safetensors", i) for i in range(3)]
    for i in range(3):
        repo.commit(tmp_path / f"t{i}.safetensors", f"step {i}")
    head = repo.resolve("main")
    oid = repo.revert("main")  # the head: back to its parent's tree, exactly
    assert repo.commit_object(oid).tree == repo.commit_object("main~2").tree
    assert repo.commit_object(oid).parents == [head] and repo.commit_object(oid).op.params == {"reverted": head}
    oid = repo.revert("main~2")  # an older commit: head − commit + parent
    want = tvs[1]["a.weight"] - tvs[1]["a.weight"] + tvs[0]["a.weight"]
    torch.testing.assert_close(_tensor(repo, oid, "a.weight"), want)
    assert repo.commit_object(oid).message.startswith("Revert ")
    with pytest.raises(BadInput, match="no parent to return to"):
        repo.revert("main~4")


def test_revert_errors_name_the_inputs_and_the_way_out(three, tmp_path):
    repo, _ = three
    repo.merge(["task/0", "task/1"], "task_arithmetic", into="m")
    with pytest.raises(BadInput, match="task/2 was not part of merge m.*its inputs were: task/0, task/1"):
        repo.revert("task/2", from_merge="m", branch="m")
    with pytest.raises(BadInput, match="not a merge commit"):
        repo.revert("task/0", from_merge="task/1", branch="m")
    with pytest.raises(BadInput, match="was not trained linearized"):
        repo.revert("task/0", from_merge="m", method="ntk", branch="m")
    with pytest.raises(BadInput, match="unknown revert method 'forget'"):
        repo.revert("task/0", from_merge="m", method="forget", branch="m")
    store = repo.store
    assert isinstance(store, DiskObjectStore)
    missing = repo.resolve("task/1")
    store.path(missing).unlink()  # a shallow copy: the input's commit is not here
    with pytest.raises(ObjectNotFound, match="not in this repository.*shallow.*--method negation"):
        repo.revert("task/0", from_merge="m", branch="m")


def test_negation_alpha_auto_keeps_retain_accuracy_within_the_margin(vit, tmp_path):
    from transformers import ViTForImageClassification

    from dithub.eval.scale import AUTO_GRID

    base = load_file(str(vit.base_dir / "model.safetensors"))
    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit", vit.base_dir)
    taus = []
    for i in range(3):
        g = torch.Generator().manual_seed(40 + i)
        taus.append({k: 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items() if k.endswith("query.weight")})
        save_file(taus[-1], str(tmp_path / f"t{i}.safetensors"))
        repo.commit(tmp_path / f"t{i}.safetensors", f"t{i}", branch=f"client/{i}", base="vit")
    repo.merge([f"client/{i}" for i in range(3)], "task_arithmetic", {"alpha": 1.0}, into="fed")
    torch.manual_seed(1)
    x = torch.rand(64, 1, 8, 8)
    model = ViTForImageClassification.from_pretrained(vit.base_dir).eval()
    save_file({"inputs": x, "labels": model(pixel_values=x).logits.argmax(-1)}, str(tmp_path / "retain.safetensors"))
    oid = repo.revert("client/1", from_merge="fed", method="negation", alpha="auto", probe=str(tmp_path / "retain.safetensors"),
                      margin=0.05, branch="fed")
    chosen = repo.commit_object(oid).op.params["alpha"]

    def retain(alpha: float) -> float:  # independently: the weights by hand, the base model's class
        weights = {k: v + sum(t.get(k, 0) for t in taus) - alpha * taus[1].get(k, 0) for k, v in base.items()}
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / "config.json").write_text((vit.base_dir / "config.json").read_text())
        save_file(weights, str(tmp_path / "m" / "model.safetensors"))
        m = ViTForImageClassification.from_pretrained(tmp_path / "m").eval()
        with torch.no_grad():
            return float((m(pixel_values=x).logits.argmax(-1) == model(pixel_values=x).logits.argmax(-1)).float().mean())

    reference = retain(0.0)
    assert retain(chosen) >= reference - 0.05 - 1e-6
    larger = [a for a in AUTO_GRID if a > chosen]
    assert all(retain(a) < reference - 0.05 for a in larger)


def test_ntk_removes_a_linearized_client_to_first_order(tmp_path):
    from transformers import ViTForImageClassification

    from dithub.train import LinearizedModel, save_linearized, train_linearized

    base_dir = tmp_path / "base"
    tiny_vit(3).save_pretrained(base_dir)
    names = ["vit.layers.0.attention.q_proj.weight", "vit.layers.1.mlp.fc1.weight"]
    model = ViTForImageClassification.from_pretrained(base_dir)
    if not all(n in dict(model.named_parameters()) for n in names):  # older transformers: original names
        names = ["vit.encoder.layer.0.attention.attention.query.weight", "vit.encoder.layer.1.intermediate.dense.weight"]
    from dithub.formats.hf_names import model_names

    to_model = model_names(json.loads((base_dir / "config.json").read_text()), load_file(str(base_dir / "model.safetensors")))
    to_ckpt = {m: c for c, m in to_model.items()}
    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit", base_dir)
    g = torch.Generator().manual_seed(0)
    clients = []
    for k in range(3):
        x, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
        delta = train_linearized(ViTForImageClassification.from_pretrained(base_dir), names,
                                 lambda x=x, y=y: [({"pixel_values": x}, y)], epochs=3, lr=1e-2, seed=k)
        tau = {to_ckpt.get(n, n): d for n, d in delta.items()}
        clients.append(tau)
        save_linearized(tau, tmp_path / f"c{k}.safetensors")
        repo.commit(tmp_path / f"c{k}.safetensors", f"client {k}", branch=f"client/{k}", base="vit")
    repo.merge([f"client/{k}" for k in range(3)], "task_arithmetic", {"alpha": 1 / 3}, into="fed")
    oid = repo.revert("client/1", from_merge="fed", method="ntk", branch="fed")
    got = {k: _tensor(repo, oid, k) for k in clients[0]}
    # independently: the linearized model's outputs are linear in δ, so removing client 1 leaves
    # exactly the outputs of the other two clients' average, to first order in the real model
    lin = LinearizedModel(ViTForImageClassification.from_pretrained(base_dir), names)
    probe = torch.rand(8, 1, 8, 8, generator=g)

    def outputs(tau: dict) -> torch.Tensor:
        with torch.no_grad():
            for n in names:
                lin.delta[n.replace(".", "/")].copy_(tau[to_ckpt.get(n, n)])
            return lin(pixel_values=probe)

    rest = {k: (clients[0][k] + clients[2][k]) / 3 for k in clients[0]}
    torch.testing.assert_close(outputs(got), outputs(rest), rtol=1e-4, atol=1e-5)
    base_model = ViTForImageClassification.from_pretrained(base_dir).eval()  # finite differences of the real model
    params = dict(base_model.named_parameters())
    with torch.no_grad():
        f0 = base_model(pixel_values=probe).logits
        eps = 1e-3
        for n in names:
            params[n] += eps * rest[to_ckpt.get(n, n)]
        fd = (base_model(pixel_values=probe).logits - f0) / eps
    torch.testing.assert_close(outputs(rest) - f0, fd, rtol=2e-2, atol=2e-3)
    assert repo.commit_object(oid).op.method == "ntk"


def test_cli_revert(cli, three):
    repo, _ = three
    repo.merge(["task/0", "task/1", "task/2"], "task_arithmetic", into="m")
    root = repo.path.parent if repo.path.name == ".dithub" else repo.path
    res = cli(["-C", str(root), "revert", "task/1", "--from", "m", "--into", "m", "--json"])
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["op"]["name"] == "revert" and data["op"]["params"]["removed"] == repo.resolve("task/1")
    res = cli(["-C", str(root), "log", "m", "-n", "1", "--json"])
    assert json.loads(res.out)[0]["message"] == "revert: remove task/1 from m (exact)"
    res = cli(["-C", str(root), "revert", "task/1", "--from", "m~1", "--into", "m", "--method", "negation", "--alpha", "x"])
    assert res.code == BadInput.exit_code and "--alpha: 'x' is not a number" in res.err


def test_exact_revert_of_an_ema_blend_says_what_is_left(tmp_path):
    repo = Repo.init(tmp_path / "r")
    for i in range(2):
        lora_adapter(tiny_vit(), tmp_path / f"l{i}", seed=30 + i)
        repo.commit(tmp_path / f"l{i}", f"v{i}", branch=f"class/{i}")
    repo.merge(["class/0", "class/1"], "ema", into="blend")
    # ema blends exactly an old and a new version; without one there is nothing to blend
    with pytest.raises(BadInput, match="ema blends exactly two inputs"):
        repo.revert("class/0", from_merge="blend", branch="blend")
    assert len(repo.log(["blend"])) == 3  # nothing was written


def test_revert_methods_are_registered_algorithms_and_the_cli_lists_them():
    """One algorithm shape (issue 19): negation and ntk are registered with their papers; the
    executor reads ntk's refusal of inputs not trained linearized from its capabilities."""
    from dithub.algorithms.revert import METHODS as ALGORITHMS
    from dithub.algorithms.revert import REGISTRY as REVERTS
    from dithub.cli.commands.revert import METHODS as LISTED

    assert tuple(LISTED) == tuple(ALGORITHMS) == ("exact", "negation", "ntk")
    assert REVERTS["negation"].paper == "2212.04089" and REVERTS["ntk"].paper == "2510.13606"
    assert "linearized-only" in REVERTS["ntk"].capabilities and "linearized-only" not in REVERTS["negation"].capabilities
