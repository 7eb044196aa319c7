"""Recipes (issue 21, part 1): per-tensor parameters, mergekit YAML in (``merge --config``) and out
(``show --recipe``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import commit_task_vectors, stored_f32
from dithub import Repo
from dithub.algorithms.merge import get_method

NAMES = ("model.layers.0.mlp.w", "model.layers.0.attn.w", "model.layers.1.mlp.w", "model.layers.1.attn.w", "model.embed.w", "lm_head.w")


def make_tv(path: Path, i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    tv = {n: torch.randn(6, 5, generator=g) for n in NAMES}
    save_file(tv, str(path))
    return tv


@pytest.fixture
def tvs(tmp_path):
    repo = Repo.init(tmp_path / "repo")
    return repo, commit_task_vectors(repo, tmp_path, make_tv, n=3)


def test_per_tensor_parameters_merge_each_tensor_by_its_rule_and_replay(tvs, cli):
    repo, tv = tvs
    res = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "task/2", "--method", "ties", "-p", "density=0.2",
               "-p", "density[*.mlp.*]=0.6", "-p", "density[*.layers.1.mlp.*]=0.9", "--into", "m"])
    assert res.code == 0, res.err
    ties = get_method("ties")
    for name in NAMES:
        density = 0.9 if "layers.1.mlp" in name else 0.6 if ".mlp." in name else 0.2  # the last matching rule wins
        expected = ties([t[name] for t in tv], density=density)
        torch.testing.assert_close(stored_f32(repo, "m", name, (6, 5)), expected, rtol=0, atol=0)
    op = repo.commit_object("m").op
    assert op.params["per_tensor"] == [["*.mlp.*", {"density": 0.6}], ["*.layers.1.mlp.*", {"density": 0.9}]]
    repo.revert("task/2", from_merge="m", branch="m")  # exact: the recorded merge replayed without task/2, rules included
    for name in NAMES:
        density = 0.9 if "layers.1.mlp" in name else 0.6 if ".mlp." in name else 0.2
        torch.testing.assert_close(stored_f32(repo, "m", name, (6, 5)), ties([tv[0][name], tv[1][name]], density=density),
                                   rtol=0, atol=0)
    bad = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "-p", "density[*]=2", "--dry-run"])
    assert bad.code == 3 and "density" in bad.err  # checked as the method checks its parameters
    bad = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "-p", "nope[*]=1", "--dry-run"])
    assert bad.code == 3 and "no parameter 'nope'" in bad.err
