"""fsck finds tampering and missing objects; gc prunes only the unreachable."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import CorruptObject


@pytest.fixture
def repo(tmp_path):
    repo = Repo.init(tmp_path / "r")
    save_file({"w": torch.arange(16.0).reshape(4, 4), "b": torch.ones(4)}, str(tmp_path / "a.safetensors"))
    repo.commit(tmp_path / "a.safetensors", "a")
    return repo


def _flip(path, offset=-1):
    os.chmod(path, 0o644)
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x40
    path.write_bytes(bytes(blob))


def test_clean_repo(repo):
    report = repo.fsck()
    assert report.ok and report.objects == 4 and report.dangling == 0


def test_flipped_byte_in_a_tensor_is_named_by_read_and_fsck(repo, cli):
    oid = repo.tree_of("main").tensors["w"].id
    _flip(repo.store.path(oid))
    with pytest.raises(CorruptObject, match=oid):
        repo.export("main", repo.path / "out")
    assert not (repo.path / "out").exists()
    report = repo.fsck()  # the read set the damaged copy aside: now missing, so a write of its bytes restores it
    assert [o for o, _ in report.missing] == [oid] and not report.ok
    assert (repo.path / ".dithub" / "damaged" / oid).is_file()
    other = repo.tree_of("main").tensors["b"].id
    _flip(repo.store.path(other))  # damage no read has met yet: fsck names it corrupt, and leaves it in place
    report = repo.fsck()
    assert [o for o, _ in report.corrupt] == [other] and repo.store.contains(other)
    res = cli("fsck", cwd=repo.path)
    assert res.code == CorruptObject.exit_code and other in res.out and "1 corrupt" in res.err


def test_missing_object_is_reported_with_its_referrer(repo):
    tree = repo.commit_object("main").tree
    oid = repo.tree_of("main").tensors["b"].id
    repo.store.path(oid).unlink()
    report = repo.fsck()
    assert report.missing == [(oid, f"tensor referenced by tree {tree} (b)")]


def test_gc_prunes_unreachable_after_grace(repo, tmp_path):
    save_file({"w": torch.zeros(4, 4), "b": torch.ones(4)}, str(tmp_path / "c.safetensors"))
    repo.commit(tmp_path / "c.safetensors", "to drop", branch="tmp")
    repo.delete_branch("tmp")
    assert repo.gc().removed_objects == 0  # inside the grace period
    report = repo.gc(grace_seconds=0)
    assert report.removed_objects == 3  # commit, tree, the zeros tensor; "b" is shared
    assert repo.fsck().ok and repo.fsck().dangling == 0


def test_gc_keeps_what_reflogs_reach(repo, tmp_path):
    first = repo.head()
    save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "c.safetensors"))
    repo.commit(tmp_path / "c.safetensors", "second")
    repo.refs.set_if_equals("refs/heads/main", repo.head(), first, "reset")
    assert repo.gc(grace_seconds=0).removed_objects == 0
