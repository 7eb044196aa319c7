"""Activation merges: RegMean (arXiv 2212.09849) and Chain of Merges (arXiv 2508.21421).

Each merged linear layer is checked against the definition, computed here independently: the layer's
input Gram matrices measured with forward hooks on a fresh transformers model (each input's own for
RegMean; the merged model's for CoM, whose layers before any layer are final, so measuring on the
result is the chain's fixed point) and the least-squares solution by numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ViTForImageClassification

from dithub import Repo
from dithub.algorithms.merge.regression import regmean_solve
from dithub.errors import BadInput
from dithub.ops.maintenance import fsck
from dithub.ops.merge.run import replay_merge

from conftest import tiny_vit

N_TASKS = 3


def _np_solve(weights: list[np.ndarray], grams: list[np.ndarray], ratio: float) -> np.ndarray:
    """Wᵀ = (Σ G̃_i)⁻¹ Σ G̃_i W_iᵀ with G̃ = ratio·G off the diagonal (numpy, float64)."""
    def reduced(g: np.ndarray) -> np.ndarray:
        return g * ratio + np.diag(np.diag(g)) * (1 - ratio)
    total = sum(reduced(g) for g in grams)
    rhs = sum(reduced(g) @ w.T for g, w in zip(grams, weights))
    return np.linalg.solve(total, rhs).T


def test_regmean_solution_is_the_least_squares_fit():
    """With ratio 1 the solution minimizes Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖² / n_i (lstsq on stacked rows)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (20, 35, 50)]
    ws = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in xs]
    got = regmean_solve([(w, x.T @ x / len(x)) for w, x in zip(ws, xs)], 1.0)
    a = np.concatenate([x.numpy() / np.sqrt(len(x)) for x in xs])
    b = np.concatenate([x.numpy() @ w.numpy().T / np.sqrt(len(x)) for x, w in zip(xs, ws)])
    want = np.linalg.lstsq(a, b, rcond=None)[0].T
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-10)
    # ratio 0: each output's weight on feature j is the G_jj-weighted mean of the inputs' weights
    grams = [x.T @ x / len(x) for x in xs]
    diag = torch.stack([gr.diagonal() for gr in grams])  # (T, in)
    mean = sum(d * w for d, w in zip(diag, ws)) / diag.sum(0)
    torch.testing.assert_close(regmean_solve(list(zip(ws, grams)), 0.0), mean)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A tiny ViT base, three task vectors on its linear weights and LayerNorms, a probe per task."""
    root = tmp_path_factory.mktemp("activation")
    base = tiny_vit()
    base.save_pretrained(root / "base")
    state = base.state_dict()
    changed = [k for k in state if k.startswith("vit.layers.") and k.endswith((".weight", ".bias"))]
    g = torch.Generator().manual_seed(5)
    taus, probes = [], []
    for i in range(N_TASKS):
        tau = {k: 0.05 * torch.randn(state[k].shape, generator=g) for k in changed}
        save_file(tau, str(root / f"tv{i}.safetensors"))
        taus.append(tau)
        probe = root / f"p{i}.safetensors"
        save_file({"inputs": torch.randn(24, 1, 8, 8, generator=g) + i, "labels": torch.arange(24) % 10}, str(probe))
        probes.append(probe)
    return root, taus, probes


def _repo(tasks, path) -> Repo:
    root, _taus, _probes = tasks
    repo = Repo.init(path)
    repo.base_add("vit", root / "base")
    for i in range(N_TASKS):
        repo.commit(root / f"tv{i}.safetensors", f"task {i}", branch=f"task/{i}", base="vit")
    repo.checkout("task/0")
    return repo


def _model(base_dir, tau: dict[str, torch.Tensor]) -> ViTForImageClassification:
    model = ViTForImageClassification.from_pretrained(base_dir).eval()
    with torch.no_grad():
        params = dict(model.named_parameters())
        for k, v in tau.items():
            params[k] += v
    return model


def _grams(model, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1])))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(pixel_values=pixels)
    for h in hooks:
        h.remove()
    out = {}
    for n, xs in seen.items():
        x = torch.cat(xs).double().numpy()
        out[n] = x.T @ x / len(x)
    return out


def _merged(repo, rev) -> dict[str, torch.Tensor]:
    tree = repo.tree_of(rev)
    return {n: torch.frombuffer(bytearray(repo.store.read_tensor(e.id).data), dtype=torch.float32).reshape(e.shape)
            for n, e in tree.tensors.items()}


def _check_layers(merged, taus, base_dir, grams_of, ratio=0.6):
    """Every merged linear weight is the numpy solution on ``grams_of(i)``; every other tensor the mean."""
    base = dict(ViTForImageClassification.from_pretrained(base_dir).named_parameters())
    checked = 0
    for name, value in merged.items():
        module = name.rpartition(".")[0]
        own = [(base[name] + t[name]).detach().double().numpy() for t in taus]
        grams = [grams_of(i) for i in range(len(taus))]
        if name.endswith(".weight") and module in grams[0]:
            want = _np_solve(own, [g[module] for g in grams], ratio) - base[name].detach().double().numpy()
            checked += 1
        else:
            want = np.mean(own, axis=0) - base[name].detach().double().numpy()
        np.testing.assert_allclose(value.numpy(), want, rtol=2e-4, atol=2e-6, err_msg=name)
    assert checked == 12  # q, k, v, o, fc1, fc2 in each of two layers


def test_regmean_and_com_against_their_definitions(tasks, tmp_path, cli):
    root, taus, probes = tasks
    repo = _repo(tasks, tmp_path / "r")
    given = " ".join(f"--probe {p}" for p in probes)
    refs = " ".join(f"task/{i}" for i in range(N_TASKS))
    for method in ("regmean", "com"):
        res = cli(f"merge {refs} --method {method} {given} --into {method}", cwd=repo.path)
        assert res.code == 0, res.err
    data = [load_file(str(p))["inputs"] for p in probes]
    own_grams = [_grams(_model(root / "base", taus[i]), data[i]) for i in range(N_TASKS)]
    _check_layers(_merged(repo, "regmean"), taus, root / "base", lambda i: own_grams[i])
    com = _merged(repo, "com")
    chained = [_grams(_model(root / "base", com), data[i]) for i in range(N_TASKS)]  # on the merged model
    _check_layers(com, taus, root / "base", lambda i: chained[i])
    # the chain changes the answer after the first layers: those inputs differ between the two
    regmean = _merged(repo, "regmean")
    deep = "vit.layers.1.mlp.fc2.weight"
    assert not torch.allclose(com[deep], regmean[deep], atol=1e-5)

    # the probes are stored with the commit: a replay gives the same tree, fsck is clean
    commit = repo.store.read_commit(repo.resolve("com"))
    assert len(commit.op.data) == N_TASKS and commit.op.params == {"ratio": 0.6}
    assert replay_merge(repo, commit) == commit.tree
    assert fsck(repo.store, repo.refs).ok


def test_one_shared_probe_gc_push_and_exact_revert(tasks, tmp_path, cli):
    root, _taus, probes = tasks
    repo = _repo(tasks, tmp_path / "r")
    res = cli(f"merge task/0 task/1 task/2 --method com --probe {probes[0]} -p ratio=0.9 --into m", cwd=repo.path)
    assert res.code == 0, res.err
    assert cli("gc --prune-now", cwd=repo.path).code == 0
    commit = repo.store.read_commit(repo.resolve("m"))
    assert replay_merge(repo, commit) == commit.tree  # the probe survived gc
    # a clone gets the probe with the commit, and replays there
    assert cli(f"clone {repo.path} {tmp_path / 'c'}", cwd=tmp_path).code == 0
    clone = Repo.open(tmp_path / "c")
    assert replay_merge(clone, clone.store.read_commit(repo.resolve("m"))) == commit.tree
    # exact revert of task/2 = the merge of task/0 and task/1 on the same probe
    res = cli("revert task/2 --from m --method exact --into m", cwd=repo.path)
    assert res.code == 0, res.err
    cli(f"merge task/0 task/1 --method com --probe {probes[0]} -p ratio=0.9 --into two", cwd=repo.path)
    assert repo.tree_of("m").tensors == repo.tree_of("two").tensors


def test_activation_merges_refuse_bad_input(tasks, tmp_path, cli):
    _root, _taus, probes = tasks
    repo = _repo(tasks, tmp_path / "r")
    heads = repo.branches()
    assert "--probe" in cli("merge task/0 task/1 --method com", cwd=repo.path).err
    res = cli(f"merge task/0 task/1 task/2 --method regmean --probe {probes[0]} --probe {probes[1]}", cwd=repo.path)
    assert res.code != 0 and "one per input" in res.err
    assert "no final scale" in cli(f"merge task/0 task/1 --method com --probe {probes[0]} --alpha 0.5", cwd=repo.path).err
    assert "more than once" in cli(f"merge task/0 task/1 --method ties --probe {probes[0]} --probe {probes[1]}", cwd=repo.path).err
    with pytest.raises(BadInput, match="reads no probe"):
        repo.merge(["task/0", "task/1"], "ties", probes=[str(probes[0])])
    save_file({"inputs": torch.randn(4, 3, 5, 5)}, str(tmp_path / "odd.safetensors"))  # not the model's pixels
    res = cli(f"merge task/0 task/1 --method com --probe {tmp_path}/odd.safetensors", cwd=repo.path)
    assert res.code != 0 and "odd.safetensors" in res.err and "do not fit" in res.err and "Traceback" not in res.err
    res = cli(f"merge task/0 task/1 --method com --probe {tmp_path}/missing.safetensors", cwd=repo.path)
    assert res.code != 0 and "missing.safetensors" in res.err
    assert repo.branches() == heads  # nothing committed
    with pytest.raises(BadInput, match="ratio"):
        repo.merge(["task/0", "task/1"], "com", {"ratio": 1.5}, probes=[str(probes[0])])
