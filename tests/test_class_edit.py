"""revert --class C: Class Vectors (arXiv 2510.11268) — the class vector and the steering rule
against their definitions, the final block the fit moves, and forgetting one digit class of the
demo's noisy-digits fine-tune with the other classes kept, recorded, replayed and undone."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_vit
from dithub import Repo
from dithub.algorithms.edit import class_vector, steer
from dithub.errors import BadInput
from dithub.ops.class_edit import replay_class_edit
from dithub.train import final_block

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


def test_class_vector_and_steering_are_their_definitions():
    g = torch.Generator().manual_seed(0)
    ft, pre = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    kappa = class_vector(ft, pre)
    torch.testing.assert_close(kappa, torch.stack(list(ft)).sum(0) / 7 - torch.stack(list(pre)).sum(0) / 7)
    centroid = ft.mean(0)
    z = torch.stack([centroid * 2, -centroid, torch.randn(5, generator=g)])
    out = steer(z, centroid, kappa, alpha=3.0, gate=0.5)
    for row, new in zip(z, out):
        cos = float(row @ centroid / (row.norm() * centroid.norm()))
        torch.testing.assert_close(new, row - 3.0 * kappa if cos >= 0.5 else row)
    torch.testing.assert_close(out[0], z[0] - 3.0 * kappa)  # the centroid's direction is always moved
    torch.testing.assert_close(out[1], z[1])  # the opposite never


def test_the_final_block_is_the_last_layer_and_the_norm_after_it():
    model = tiny_vit()
    names = final_block(model, "classifier", torch.randn(1, 1, 8, 8))
    want = [n for n, _ in model.named_parameters() if n.startswith(("vit.layers.1.", "vit.layernorm."))]
    assert sorted(names) == sorted(want) and any("layernorm." in n for n in names) and len(want) > 4


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory):
    sys.path.insert(0, str(DIGITS.parent))
    from dithub_demo import train_probe

    root = tmp_path_factory.mktemp("class")
    repo = Repo.init(root / "r")
    repo.base_add("vit-v1", DIGITS / "bases" / "vit-v1")
    repo.commit(DIGITS / "tv" / "noisy.safetensors", "noisy digits", branch="tv/noisy", base="vit-v1")
    probe = train_probe("noisy", root / "noisy-train.safetensors")
    return repo, probe


def _accuracy(repo, rev, cls):
    from dithub_demo import domain_split
    from dithub_demo.scoreboard import _model

    split = domain_split("noisy")
    with torch.no_grad():
        pred = _model(repo, rev, 1.0)(pixel_values=split.x_test).logits.argmax(-1)
    y = split.y_test
    return float((pred[y == cls] == cls).float().mean()), float((pred[y != cls] == y[y != cls]).float().mean())


def test_forgetting_one_digit_keeps_the_others(forgotten, cli):
    repo, probe = forgotten
    res = cli(f"revert tv/noisy --class 3 --probe {probe} --into forget/3", cwd=repo.path)
    assert res.code == 0, res.err
    (was, others_before), (now, others_after) = _accuracy(repo, "tv/noisy", 3), _accuracy(repo, "forget/3", 3)
    assert was > 0.5 and now < 0.05  # class 3 forgotten on the test split (never seen by the edit)
    assert others_after > others_before - 0.06  # the other nine kept
    commit = repo.store.read_commit(repo.resolve("forget/3"))
    assert commit.op.name == "class-edit" and commit.op.method == "class_vectors"
    assert commit.op.params == {"class": 3, "alpha": 4.0, "gate": 0.5, "steps": 200, "lr": 1e-3, "seed": 0}
    assert commit.op.inputs == [repo.resolve("tv/noisy")] and repo.store.read_tree(commit.op.data[0]).kind == "probe"
    assert replay_class_edit(repo, commit) == commit.tree  # recomputed from the record, bit for bit
    # only the final block differs from the adapter
    before, after = repo.tree_of("tv/noisy").tensors, repo.tree_of("forget/3").tensors
    changed = {n for n in after if n not in before or after[n].id != before[n].id}
    assert changed and all(n.startswith(("vit.encoder.layer.3.", "vit.layernorm.")) or n not in before for n in changed)
    # and it is undone like any commit
    assert cli("revert forget/3 --into forget/3", cwd=repo.path).code == 0
    assert _accuracy(repo, "forget/3", 3) == pytest.approx((was, others_before), abs=1e-3)


def test_class_edit_refuses_bad_input(forgotten, cli, tmp_path):
    repo, probe = forgotten
    heads = repo.branches()
    save_file({"inputs": torch.rand(4, 1, 8, 8)}, str(tmp_path / "nolabels.safetensors"))
    assert "labels" in cli(f"revert tv/noisy --class 3 --probe {tmp_path}/nolabels.safetensors", cwd=repo.path).err
    save_file({"inputs": torch.rand(4, 1, 8, 8), "labels": torch.zeros(4, dtype=torch.long)}, str(tmp_path / "zeros.safetensors"))
    assert "no sample of class 3" in cli(f"revert tv/noisy --class 3 --probe {tmp_path}/zeros.safetensors", cwd=repo.path).err
    assert "--probe" in cli("revert tv/noisy --class 3", cwd=repo.path).err
    assert "outside" in cli(f"revert tv/noisy --class 3 --probe {probe} -p gate=2", cwd=repo.path).err
    with pytest.raises(BadInput, match="--from"):
        repo.revert("tv/noisy", from_merge="tv/noisy", forget_class=3, probe=str(probe))
    assert repo.branches() == heads  # nothing committed
