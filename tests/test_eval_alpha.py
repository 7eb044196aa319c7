"""Probe sets, evaluation of a base with an adapter at a scale, and merge --alpha auto."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import ViTForImageClassification

from dithub import Repo
from dithub.errors import BadInput
from dithub.eval import accuracy, load_probe
from dithub.eval.scale import AUTO_GRID


@pytest.fixture
def merged_repo(vit, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.base_add("vit-v1", vit.base_dir)
    repo.commit(vit.adapter_dir, "a", branch="class/a", base="vit-v1")
    repo.commit(vit.adapter2_dir, "b", branch="class/b", base="vit-v1")
    return repo


def _full_model(repo, rev, out):
    return ViTForImageClassification.from_pretrained(repo.export_merged(rev, None, out)).eval()


def test_probe_file_and_entry_point(tmp_path):
    save_file({"inputs": torch.randn(5, 1, 8, 8), "labels": torch.arange(5)}, str(tmp_path / "p.safetensors"))
    probe = load_probe(str(tmp_path / "p.safetensors"), batch_size=2)
    assert probe.size == 5 and [len(y) for _, y in probe.batches] == [2, 2, 1]
    save_file({"inputs": torch.randn(2, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(BadInput, match="lacks tensor 'labels'"):
        load_probe(str(tmp_path / "bad.safetensors"))
    with pytest.raises(BadInput, match="cannot be loaded"):
        load_probe("no_such_module_xyz:batches")


def test_alpha_auto_picks_a_scale_that_scores_best(merged_repo, vit, tmp_path, cli):
    repo = merged_repo
    # the probe's labels are what the merge at scale 0.6 predicts, so 0.6 scores 100%
    repo.merge(["class/a", "class/b"], "task_arithmetic", {"alpha": 0.6}, into="ref")
    pixels = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        labels = _full_model(repo, "ref", tmp_path / "ref").eval()(pixel_values=pixels).logits.argmax(-1)
    save_file({"inputs": pixels, "labels": labels}, str(tmp_path / "probe.safetensors"))
    res = cli(f"merge class/a class/b --method task_arithmetic --alpha auto --probe {tmp_path}/probe.safetensors "
              f"--into auto --json", cwd=repo.path)
    assert res.code == 0, res.err
    chosen = json.loads(res.out)["op"]["params"]["alpha"]
    assert chosen in AUTO_GRID
    probe = load_probe(str(tmp_path / "probe.safetensors"))
    assert accuracy(_full_model(repo, "auto", tmp_path / "auto"), probe) == 1.0  # scored independently
    assert "0.6: 1.000" in repo.commit_object("auto").message
    assert accuracy(_full_model(repo, "class/a", tmp_path / "a"), probe) < 1.0  # the probe discriminates


def test_alpha_auto_needs_a_probe_and_a_scale(merged_repo, cli):
    assert "needs --probe" in cli("merge class/a class/b --method ties --alpha auto", cwd=merged_repo.path).err
    res = cli("merge class/a class/b --method mean_ba --alpha auto --probe x.safetensors", cwd=merged_repo.path)
    assert res.code == BadInput.exit_code and "no final scale" in res.err


def test_alpha_auto_with_a_user_metric(merged_repo, vit, tmp_path, cli, monkeypatch):
    repo = merged_repo
    # the metric: minus the distance of the model's weights to the merge at scale 0.9 (written out
    # by export, another code path), so the sweep must pick 0.9
    repo.merge(["class/a", "class/b"], "task_arithmetic", {"alpha": 0.9}, into="ref")
    target = {k: v.clone() for k, v in _full_model(repo, "ref", tmp_path / "ref").state_dict().items()}
    torch.save(target, tmp_path / "target.pt")
    (tmp_path / "closeness.py").write_text(
        "import torch\n"
        f"TARGET = torch.load({str(tmp_path / 'target.pt')!r})\n"
        "def score(model, probe):\n"
        "    state = model.state_dict()\n"
        "    return -sum(float((state[k].float() - v.float()).pow(2).sum()) for k, v in TARGET.items() if k in state)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    save_file({"inputs": torch.randn(4, 1, 8, 8), "labels": torch.zeros(4, dtype=torch.long)}, str(tmp_path / "p.safetensors"))
    res = cli(f"merge class/a class/b --method task_arithmetic --alpha auto --probe {tmp_path}/p.safetensors "
              f"--metric closeness:score --into auto --json", cwd=repo.path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["op"]["params"]["alpha"] == 0.9 and "by closeness:score" in repo.commit_object("auto").message
    res = cli("merge class/a class/b --method task_arithmetic --metric closeness:score", cwd=repo.path)
    assert res.code == BadInput.exit_code and "--metric is used with --alpha auto" in res.err
    res = cli(f"merge class/a class/b --method task_arithmetic --alpha auto --probe {tmp_path}/p.safetensors "
              "--metric nomodule_xyz:f --into x", cwd=repo.path)
    assert res.code == BadInput.exit_code and "cannot be loaded" in res.err
