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
    reverted = cli(["-C", str(repo.path), "revert", "task/2", "--from", "m", "--method", "exact", "--into", "m"])
    assert reverted.code == 0, reverted.err  # exact: the recorded merge replayed without task/2, rules included
    for name in NAMES:
        density = 0.9 if "layers.1.mlp" in name else 0.6 if ".mlp." in name else 0.2
        torch.testing.assert_close(stored_f32(repo, "m", name, (6, 5)), ties([tv[0][name], tv[1][name]], density=density),
                                   rtol=0, atol=0)
    bad = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "-p", "density[*]=2", "--dry-run"])
    assert bad.code == 3 and "density" in bad.err  # checked as the method checks its parameters
    bad = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "-p", "nope[*]=1", "--dry-run"])
    assert bad.code == 3 and "no parameter 'nope'" in bad.err


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_mergekit_names_map_as_the_table_says(tvs, tmp_path, cli):
    """Each mapped mergekit method computes what its dithub equivalent computes (the table in
    dithub/ops/merge/recipe.py and docs/cli.md)."""
    repo, tv = tvs
    models = [{"model": "task/0", "parameters": {"weight": 1.0}}, {"model": "task/1", "parameters": {"weight": 0.5}}]
    cases = [
        ({"merge_method": "task_arithmetic", "parameters": {"lambda": 0.7}}, "task_arithmetic", {"alpha": 0.7}),
        ({"merge_method": "task_arithmetic", "parameters": {"normalize": True}}, "task_arithmetic", {"alpha": 1 / 1.5}),
        ({"merge_method": "linear"}, "task_arithmetic", {"alpha": 1 / 1.5}),
        ({"merge_method": "ties", "parameters": {"density": 0.4, "lambda": 0.9}}, "ties", {"density": 0.4, "lam": 0.9, "convention": "mergekit"}),
        ({"merge_method": "dare_linear", "parameters": {"density": 0.3}}, "dare", {"p": 0.7, "combine": "ta", "lam": 1.0}),
        ({"merge_method": "dare_ties", "parameters": {"density": 0.3, "normalize": True}}, "dare",
         {"p": 0.7, "combine": "ties", "convention": "mergekit", "lam": 1.0}),
        ({"merge_method": "breadcrumbs", "parameters": {"density": 0.5, "gamma": 0.1}}, "breadcrumbs",
         {"beta": 0.5, "gamma": 0.1, "alpha": 1.0, "convention": "mergekit"}),
        ({"merge_method": "magmax", "parameters": {"alpha": 0.4}}, "magmax", {"alpha": 0.4}),  # a dithub name: its own parameters
    ]
    for i, (recipe, method, params) in enumerate(cases):
        doc = {**recipe, "models": models if method != "magmax" else [{"model": "task/0"}, {"model": "task/1"}]}
        res = cli(["-C", str(repo.path), "merge", "--config", str(write(tmp_path / f"r{i}.yaml", doc)), "--into", f"r/{i}"])
        assert res.code == 0, (recipe, res.err)
        weights = None if method == "magmax" else [1.0, 0.5]
        direct = repo.merge(["task/0", "task/1"], method, {**params, **({"weights": weights} if weights else {})}, into=f"d/{i}")
        assert repo.commit_object(f"r/{i}").tree == repo.commit_object(direct).tree, recipe


def test_gradients_and_filters_are_evaluated_per_tensor_as_mergekit_does(tvs, tmp_path, cli):
    repo, tv = tvs
    doc = {"merge_method": "ties", "models": [{"model": "task/0"}, {"model": "task/1"}, {"model": "task/2"}],
           "parameters": {"density": [{"filter": "mlp", "value": [0.2, 0.8]}, {"filter": "embed", "value": 0.9}, {"value": 0.5}]}}
    res = cli(["-C", str(repo.path), "merge", "--config", str(write(tmp_path / "g.yaml", doc)), "--into", "g"])
    assert res.code == 0, res.err
    ties = get_method("ties")
    # layer 0 of 2 at t = 0, layer 1 at t = 1; the first matching condition wins; the catch-all last
    expected = {"model.layers.0.mlp.w": 0.2, "model.layers.1.mlp.w": 0.8, "model.embed.w": 0.9,
                "model.layers.0.attn.w": 0.5, "model.layers.1.attn.w": 0.5, "lm_head.w": 0.5}
    for name, density in expected.items():
        want = ties([t[name] for t in tv], density=density, convention="mergekit")
        torch.testing.assert_close(stored_f32(repo, "g", name, (6, 5)), want, rtol=0, atol=0)


def test_unsupported_keys_are_refused_naming_the_key(tvs, tmp_path, cli):
    repo, _ = tvs
    base = {"merge_method": "ties", "models": [{"model": "task/0"}, {"model": "task/1"}]}
    for extra, key in [({"slices": []}, "slices"), ({"tokenizer_source": "base"}, "tokenizer_source"),
                       ({"merge_method": "slerp"}, "slerp"), ({"parameters": {"epsilon": 0.1}}, "epsilon"),
                       ({"parameters": {"normalize": False}}, "normalize"), ({"frobnicate": 1}, "frobnicate"),
                       ({"models": [{"model": "task/0", "parameters": {"density": 0.2}}, {"model": "task/1", "parameters": {"density": 0.5}}]},
                        "density"),
                       ({"models": [{"model": "task/0"}, {"model": "nowhere"}]}, "nowhere")]:
        res = cli(["-C", str(repo.path), "merge", "--config", str(write(tmp_path / "bad.yaml", {**base, **extra})), "--into", "x"])
        assert res.code in (3, 6) and key in res.err and len(res.err.strip().splitlines()) == 1, (extra, res.err)
    assert "x" not in repo.branches()
    (tmp_path / "junk.yaml").write_text("merge_method: [unclosed")
    assert cli(["-C", str(repo.path), "merge", "--config", str(tmp_path / "junk.yaml")]).code == 3


def test_show_recipe_round_trips_to_the_same_tree(tvs, tmp_path, cli):
    repo, _ = tvs
    run = lambda *a: cli(["-C", str(repo.path), *a])  # noqa: E731
    assert run("merge", "task/0", "task/1", "task/2", "--method", "ties", "-p", "convention=mergekit", "-p", "density=0.3",
               "-p", "density[*.mlp.*]=0.7", "-p", "density[model.embed.w]=0.9", "-w", "task/1=0.5", "--into", "m").code == 0
    shown = run("show", "m", "--recipe")
    recipe = yaml.safe_load(shown.out)
    assert recipe["merge_method"] == "ties" and recipe["parameters"]["normalize"] is True
    assert recipe["parameters"]["density"] == [{"filter": "model.embed.w", "value": 0.9}, {"filter": ".mlp.", "value": 0.7}, {"value": 0.3}]
    assert [m["model"] for m in recipe["models"]] == ["task/0", "task/1", "task/2"]
    assert [m["parameters"]["weight"] for m in recipe["models"]] == [1.0, 0.5, 1.0]
    (tmp_path / "out.yaml").write_text(shown.out)
    assert run("merge", "--config", str(tmp_path / "out.yaml"), "--into", "back").code == 0
    assert repo.commit_object("back").tree == repo.commit_object("m").tree
    assert json.loads(run("show", "m", "--recipe", "--json").out) == recipe
    assert run("merge", "task/0", "task/1", "--method", "magmax", "--into", "mm").code == 0  # no mergekit equivalent: dithub's names
    native = yaml.safe_load(run("show", "mm", "--recipe").out)
    assert native["merge_method"] == "magmax" and native["parameters"]["tie"] == "later"
    (tmp_path / "mm.yaml").write_text(yaml.safe_dump(native))
    assert run("merge", "--config", str(tmp_path / "mm.yaml"), "--into", "mm2").code == 0
    assert repo.commit_object("mm2").tree == repo.commit_object("mm").tree
    assert run("show", "task/0", "--recipe").code == 3  # not a merge


def test_recipe_models_may_be_paths_stored_as_unreferenced_commits(tvs, tmp_path, cli):
    """An existing path wins over a revision of the same name; it is stored as a commit the merge names."""
    repo, tv = tvs
    doc = {"merge_method": "task_arithmetic", "models": [{"model": "task/0"}, {"model": str(tmp_path / "t1.safetensors")}],
           "parameters": {"lambda": 1.0}}
    res = cli(["-C", str(repo.path), "merge", "--config", str(write(tmp_path / "p.yaml", doc)), "--into", "p"])
    assert res.code == 0, res.err
    merge = repo.commit_object("p")
    stored = repo.store.read_commit(merge.op.inputs[1])
    assert repo.store.read_tree(stored.tree).tensors == repo.tree_of("task/1").tensors  # the same file: the same objects
    assert stored.message.startswith("recipe input") and repo.fsck().ok
    for name in NAMES:
        torch.testing.assert_close(stored_f32(repo, "p", name, (6, 5)), tv[0][name] + tv[1][name], rtol=0, atol=1e-6)
