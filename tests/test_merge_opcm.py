"""OPCM: the projection as defined, and the running merge across commits."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import commit_task_vectors
from dithub import Repo
from dithub.errors import BadInput
from dithub.formats import to_torch
from dithub.algorithms.merge.sequential import opcm_project


def test_projection_removes_the_diagonal_and_the_dominant_block():
    g = torch.Generator().manual_seed(0)
    prev = torch.randn(8, 6, generator=g, dtype=torch.float64)
    task = torch.randn(8, 6, generator=g, dtype=torch.float64)
    out = opcm_project(prev, task, alpha=0.5)
    u, s, vh = torch.linalg.svd(prev, full_matrices=True)
    k = int(torch.nonzero(s.cumsum(0) / s.sum() > 0.5)[0])
    p_out, p_task = u.T @ out @ vh.T, u.T @ task @ vh.T
    assert k >= 1
    assert torch.allclose(p_out.diagonal(), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p_out[:k, :k], torch.zeros(k, k, dtype=torch.float64), atol=1e-12)
    keep = torch.ones_like(p_task, dtype=torch.bool)
    keep[:k, :k] = False
    keep.diagonal().fill_(False)
    torch.testing.assert_close(p_out[keep], p_task[keep])  # everything else passes unchanged
    bias = torch.randn(6, generator=g)
    assert torch.equal(opcm_project(torch.randn(6, generator=g), bias, 0.5), bias)


def _tv(path, seed):
    g = torch.Generator().manual_seed(seed)
    t = {"w": torch.randn(8, 6, generator=g, dtype=torch.float64), "b": torch.randn(6, generator=g, dtype=torch.float64)}
    save_file(t, str(path))
    return t


def test_running_merge_over_commits(tmp_path):
    repo = Repo.init(tmp_path / "r")
    tvs = commit_task_vectors(repo, tmp_path, _tv)
    first = repo.merge(["task/0"], "opcm", into="cl")
    load = lambda rev, n: to_torch(repo.store.read_tensor(repo.tree_of(rev).tensors[n].id))  # noqa: E731
    assert torch.equal(load("cl", "w"), tvs[0]["w"])
    second = repo.merge(["task/1"], "opcm", into="cl")
    c = repo.store.read_commit(second)
    assert c.parents == [first, repo.resolve("task/1")] and c.op.method == "opcm" and c.op.params == {"alpha": 0.5, "project": "modules"}
    norm = lambda t: math.sqrt(sum(float(v.pow(2).sum()) for v in t.values()))  # noqa: E731
    u = {"w": tvs[0]["w"] + opcm_project(tvs[0]["w"], tvs[1]["w"], 0.5), "b": tvs[0]["b"] + tvs[1]["b"]}
    mean = (norm(tvs[0]) + norm(tvs[1])) / 2
    lam = norm(u) / mean
    for n in ("w", "b"):
        torch.testing.assert_close(load("cl", n), u[n] / lam)
    state = repo.tree_of("cl").config["opcm"]
    assert state["lambda"] == pytest.approx(lam) and len(state["norms"]) == 2
    repo.merge(["task/2"], "opcm", into="cl")
    merged = {n: load("cl", n) for n in ("w", "b")}
    assert norm(merged) == pytest.approx(sum(norm(t) for t in tvs) / 3)  # rescaled to the mean norm


def test_opcm_errors(tmp_path):
    repo = Repo.init(tmp_path / "r")
    _tv(tmp_path / "t.safetensors", 0)
    repo.commit(tmp_path / "t.safetensors", "t", branch="task/0")
    with pytest.raises(BadInput, match="does not hold an OPCM merge"):
        repo.merge(["task/0"], "opcm", into="task/0")
    with pytest.raises(BadInput, match="no parameter 'beta'"):
        repo.merge(["task/0"], "opcm", {"beta": 1}, into="x")
    with pytest.raises(BadInput, match="sequentially"):
        repo.plan_merge(["task/0"], "opcm")


def _lora_updates(adapter_dir) -> dict[str, torch.Tensor]:
    """(alpha/r)·B@A per module of a saved peft adapter, keyed by the module's name + .weight."""
    import json

    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    t = load_file(str(adapter_dir / "adapter_model.safetensors"))
    out = {}
    for k in t:
        if ".lora_A." in k:
            name = k.removeprefix("base_model.model.").split(".lora_A.")[0] + ".weight"
            out[name] = (config["lora_alpha"] / config["r"]) * t[k.replace(".lora_A.", ".lora_B.")].double() @ t[k].double()
    return out


@pytest.mark.parametrize("project", ["modules", "linear"])
def test_lora_inputs_whose_modules_the_model_renamed(tmp_path, project):
    """The demo's base was saved with checkpoint names (``vit.encoder.layer.0.attention.attention.query``)
    that transformers renames on load (``vit.layers.0.attention.q_proj``), the names its LoRA adapters
    use: ``modules`` projects every LoRA module (all are nn.Linear weights); ``linear``, what releases
    before it computed and their merges replay with, compared the names as given and projected none."""
    suite = Path(__file__).resolve().parents[1] / "examples" / "digits"
    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit", suite / "bases" / "vit-v1")
    for d in ("rot90", "flip"):
        repo.commit(suite / "lora" / d, d, branch=d, base="vit")
    repo.merge(["rot90"], "opcm", {"project": project}, into="cl")
    t0, t1 = _lora_updates(suite / "lora" / "rot90"), _lora_updates(suite / "lora" / "flip")
    assert any("q_proj" in n for n in t0)  # the renamed names
    first = {n: to_torch(repo.store.read_tensor(e.id)).double() for n, e in repo.tree_of("cl").tensors.items()}
    for n in t0:  # the merge starts as the first input
        torch.testing.assert_close(first[n], t0[n], rtol=1e-5, atol=1e-7)
    repo.merge(["flip"], "opcm", {"project": project}, into="cl")
    # τ̄ as stored: a rank-8 update's SVD leaves its null space's basis to rounding, and the
    # projection zeroes P's diagonal there too, so the test projects the very bits the merge read
    u = {n: first[n] + (opcm_project(first[n], t1[n], 0.5) if project == "modules" else t1[n]) for n in t0}
    norm = lambda t: math.sqrt(sum(float(v.pow(2).sum()) for v in t.values()))  # noqa: E731
    lam = norm(u) / ((norm(t0) + norm(t1)) / 2)
    for n, e in repo.tree_of("cl").tensors.items():
        torch.testing.assert_close(to_torch(repo.store.read_tensor(e.id)).double(), u[n] / lam, rtol=1e-4, atol=1e-6)
