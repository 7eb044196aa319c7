"""diff against its definitions, computed independently on small tensors."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from dithub import Repo


def _peft_dir(path, tensors, r=2, alpha=4):
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q"]}))


def _entropy_rank(matrix: torch.Tensor) -> float:
    s = torch.linalg.svdvals(matrix.double())
    s = s[s > 1e-12 * s.max()]
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def test_task_vector_diff_matches_definitions(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.randn(5, 3, generator=g), "keep": torch.ones(4), "gone": torch.zeros(2)}
    b = {"x": torch.randn(5, 3, generator=g), "keep": torch.ones(4), "new": torch.full((3,), 2.0)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    repo = Repo.memory()
    ca = repo.commit(tmp_path / "a.safetensors", "a").id
    cb = repo.commit(tmp_path / "b.safetensors", "b").id
    res = {t.name: t for t in repo.diff(ca, cb).tensors}
    assert {n: t.status for n, t in res.items()} == {"x": "changed", "keep": "same", "gone": "removed", "new": "added"}
    xa, xb = a["x"].double().flatten(), b["x"].double().flatten()
    assert abs(res["x"].delta_norm - float((xb - xa).norm())) < 1e-9
    assert abs(res["x"].cosine - float(xa @ xb / (xa.norm() * xb.norm()))) < 1e-9
    assert abs(res["new"].delta_norm - 12 ** 0.5) < 1e-9 and res["new"].cosine is None


def test_lora_module_diff_matches_explicit_delta(tmp_path):
    g = torch.Generator().manual_seed(1)
    key = "base_model.model.layer.q"
    fa = {f"{key}.lora_A.weight": torch.randn(2, 6, generator=g), f"{key}.lora_B.weight": torch.randn(7, 2, generator=g)}
    fb = {f"{key}.lora_A.weight": torch.randn(2, 6, generator=g), f"{key}.lora_B.weight": torch.randn(7, 2, generator=g)}
    _peft_dir(tmp_path / "a", fa)
    _peft_dir(tmp_path / "b", fb, alpha=8)
    repo = Repo.memory()
    ca = repo.commit(tmp_path / "a", "a").id
    cb = repo.commit(tmp_path / "b", "b").id
    (module,) = repo.diff(ca, cb).modules
    d = {k: v.double() for k, v in {**{"a" + k: v for k, v in fa.items()}, **{"b" + k: v for k, v in fb.items()}}.items()}
    delta = 4.0 * d[f"b{key}.lora_B.weight"] @ d[f"b{key}.lora_A.weight"] - 2.0 * d[f"a{key}.lora_B.weight"] @ d[f"a{key}.lora_A.weight"]
    assert module.module == "layer.q" and module.status == "changed"
    assert abs(module.delta_norm - float(delta.double().norm())) < 1e-6
    assert abs(module.effective_rank - _entropy_rank(delta)) < 1e-6
    assert module.rank == int(torch.linalg.matrix_rank(delta)) == 4
