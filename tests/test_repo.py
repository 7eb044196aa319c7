"""The Repo API: commits, dedup, branches, tags, revisions, log, checkout."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import BadInput, RefNotFound
from dithub.store import DiskObjectStore


def _task_vector(path, seed: int, n: int = 4, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    tensors = {f"layer.{i}.weight": torch.randn(size, size, generator=g) for i in range(n)}
    save_file(tensors, str(path))
    return tensors


@pytest.fixture(params=["disk", "memory"])
def repo(request, tmp_path):
    return Repo.init(tmp_path / "r") if request.param == "disk" else Repo.memory()


def test_dedup_one_changed_tensor_writes_one_tensor_object(tmp_path):
    repo = Repo.init(tmp_path / "r")
    tensors = _task_vector(tmp_path / "a.safetensors", 0)
    first = repo.commit(tmp_path / "a.safetensors", "first")
    before = set(repo.store)
    tensors["layer.2.weight"] = tensors["layer.2.weight"] + 1
    save_file(tensors, str(tmp_path / "a.safetensors"))
    second = repo.commit(tmp_path / "a.safetensors", "second")
    new = set(repo.store) - before
    store = repo.store
    assert isinstance(store, DiskObjectStore)
    kinds = sorted(bytes(store.read_buffer(o)[:6]).split(b" ")[0].split(b"\n")[0].decode() for o in new)
    assert kinds == ["commit", "tensor", "tree"]
    tensor_bytes = sum(store.size(o) for o in new if store.read_buffer(o)[:6] == b"tensor")
    assert tensor_bytes == 64 + 64 * 64 * 4  # header + one tensor's data
    assert second.new_objects == 3 and second.new_bytes == sum(store.size(o) for o in new)
    assert first.new_objects == 4 + 2
    assert repo.commit_object("main").parents == [first.id]


def test_commit_on_new_branch_forks_from_head(repo, tmp_path):
    _task_vector(tmp_path / "a.safetensors", 0)
    _task_vector(tmp_path / "b.safetensors", 1)
    a = repo.commit(tmp_path / "a.safetensors", "on main")
    b = repo.commit(tmp_path / "b.safetensors", "dog", branch="class/dog")
    assert repo.branches() == {"main": a.id, "class/dog": b.id}
    assert repo.commit_object("class/dog").parents == [a.id]
    assert repo.current_branch() == "main"  # -b does not move HEAD


def test_identical_commit_is_refused_unless_allowed(repo, tmp_path):
    _task_vector(tmp_path / "a.safetensors", 0)
    repo.commit(tmp_path / "a.safetensors", "first")
    with pytest.raises(BadInput, match="nothing to commit"):
        repo.commit(tmp_path / "a.safetensors", "again")
    assert repo.commit(tmp_path / "a.safetensors", "again", allow_empty=True).new_objects == 1


def test_unknown_base_is_refused_before_writing(tmp_path):
    repo = Repo.init(tmp_path / "r")
    _task_vector(tmp_path / "a.safetensors", 0)
    with pytest.raises(RefNotFound, match="unknown base 'vit-v9'"):
        repo.commit(tmp_path / "a.safetensors", "x", base="vit-v9")
    assert list(repo.store) == []


def test_revisions(repo, tmp_path):
    ids = []
    for i in range(3):
        _task_vector(tmp_path / "a.safetensors", i)
        ids.append(repo.commit(tmp_path / "a.safetensors", f"c{i}").id)
    repo.tag("v1", "main~1")
    assert repo.resolve("main") == repo.resolve("HEAD") == ids[2]
    assert repo.resolve("HEAD~2") == repo.resolve("main^^") == ids[0]
    assert repo.resolve("v1") == repo.resolve("refs/tags/v1") == ids[1]
    assert repo.resolve(ids[1][:8]) == ids[1]
    with pytest.raises(RefNotFound, match="past the history"):
        repo.resolve("HEAD~3")
    with pytest.raises(RefNotFound, match="unknown revision 'nope'"):
        repo.resolve("nope")


def test_log_is_topological_and_newest_first(repo, tmp_path):
    _task_vector(tmp_path / "a.safetensors", 0)
    root = repo.commit(tmp_path / "a.safetensors", "root").id
    tips = []
    for i, br in enumerate(["x", "y"]):
        repo.create_branch(br, root)
        _task_vector(tmp_path / "a.safetensors", 10 + i)
        tips.append(repo.commit(tmp_path / "a.safetensors", br, branch=br).id)
    tree = repo.store.read_commit(tips[0]).tree
    merge = repo.commit_tree(tree, "merge", branch="main", parents=[root, *tips])
    ids = [e.id for e in repo.log(["main"])]
    assert ids[0] == merge and ids[-1] == root and set(ids[1:3]) == set(tips)
    assert [e.id for e in repo.log(["main"], limit=1)] == [merge]


def test_checkout_branch_and_detached(repo, tmp_path):
    _task_vector(tmp_path / "a.safetensors", 0)
    a = repo.commit(tmp_path / "a.safetensors", "a").id
    repo.create_branch("class/cat")
    repo.checkout("class/cat")
    assert repo.current_branch() == "class/cat"
    repo.checkout(a[:10])
    assert repo.current_branch() is None and repo.head() == a
    with pytest.raises(BadInput, match="detached"):
        repo.commit(tmp_path / "a.safetensors", "x")


def test_branch_delete_rename_and_guards(repo, tmp_path):
    _task_vector(tmp_path / "a.safetensors", 0)
    a = repo.commit(tmp_path / "a.safetensors", "a").id
    repo.create_branch("class/dog")
    with pytest.raises(BadInput, match="already exists"):
        repo.create_branch("class/dog")
    repo.rename_branch("class/dog", "class/wolf")
    assert repo.branches() == {"main": a, "class/wolf": a}
    with pytest.raises(BadInput, match="HEAD is on it"):
        repo.delete_branch("main")
    assert repo.delete_branch("class/wolf") == a
    with pytest.raises(RefNotFound):
        repo.delete_branch("class/wolf")
    repo.rename_branch("main", "trunk")
    assert repo.current_branch() == "trunk"


def test_reflog_records_every_move(repo, tmp_path):
    ids = []
    for i in range(3):
        _task_vector(tmp_path / "a.safetensors", i)
        ids.append(repo.commit(tmp_path / "a.safetensors", f"c{i}").id)
    log = repo.reflog("main")
    assert [e.new for e in log] == ids and [e.old for e in log] == [None, *ids[:-1]]
    assert "c2" in log[-1].message


def test_every_public_name_of_the_modules_exists():
    """``from dithub.X import *`` works for every module that declares ``__all__`` (it named a
    ``DiffResult`` that was never there)."""
    import importlib
    import pkgutil

    import dithub

    for info in pkgutil.walk_packages(dithub.__path__, "dithub."):
        if ".demo" in info.name or info.name.endswith(("triton_merge", "testing", "__main__")):
            continue  # optional extras (the demo's and the tests' packages; Triton), and the entry point
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{info.name}.__all__ names {name!r}, which it does not define"
