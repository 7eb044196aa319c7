"""Object ids by BLAKE3-256 (new repositories) or xxh3-128 (legacy), remotes that refuse the other
hash, and ``dithub migrate --hash blake3`` — complete, bit-identical, and safe against a crash."""
from __future__ import annotations

import json

import blake3
import pytest
import torch
import xxhash
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import RemoteError
from dithub.ops.merge.run import replay_merge
from dithub.ops.sync import fetch, push, remote_add


def _raw(repo, oid) -> bytes:
    return (repo.path / ".dithub" / "objects" / oid[:2] / oid[2:]).read_bytes()


@pytest.mark.parametrize("name", ["blake3", "xxh3"])
def test_a_repository_names_objects_by_its_hash(tmp_path, cli, vit, name):
    args = "" if name == "blake3" else " --hash xxh3"  # blake3 is the default
    assert cli(f"init{args}", cwd=tmp_path).code == 0
    repo = Repo.open(tmp_path)
    assert json.loads((tmp_path / ".dithub" / "config.json").read_text())["hash"] == name
    repo.base_add("vit", vit.base_dir)
    oid = repo.commit(vit.adapter_dir, "a", branch="a", base="vit").id
    digest = (lambda b: blake3.blake3(b).hexdigest()) if name == "blake3" else xxhash.xxh3_128_hexdigest
    for o in (oid, repo.store.read_commit(oid).tree, *[e.id for e in repo.tree_of("a").tensors.values()]):
        assert len(o) == (64 if name == "blake3" else 32) and digest(_raw(repo, o)) == o  # recomputed here
    big = torch.arange(3 << 20, dtype=torch.float32)  # 12 MB: hashed on several threads, the same digest
    save_file({"w": big}, str(tmp_path / "big.safetensors"))
    tid = repo.commit(tmp_path / "big.safetensors", "big", branch="big").id
    entry = repo.tree_of("big").tensors["w"]
    assert digest(_raw(repo, entry.id)) == entry.id and repo.fsck().ok
    assert repo.store.read_commit(tid).tree in set(repo.store)
    (repo.path / ".dithub" / "objects" / entry.id[:2] / entry.id[2:]).chmod(0o644)
    with open(repo.path / ".dithub" / "objects" / entry.id[:2] / entry.id[2:], "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")  # one flipped byte in the data
    assert [o for o, _ in repo.fsck().corrupt] == [entry.id]


def test_remotes_of_another_hash_are_refused(tmp_path, vit):
    new = Repo.init(tmp_path / "new")
    new.commit(vit.adapter_dir, "a", branch="main")
    old = Repo.init(tmp_path / "old", hash="xxh3")
    old.commit(vit.adapter2_dir, "b", branch="main")
    remote_add(new, "origin", str(tmp_path / "remote"))
    push(new, "origin", ["main"])  # the first push records blake3 on the remote
    assert json.loads((tmp_path / "remote" / "config.json").read_text())["hash"] == "blake3"
    remote_add(old, "origin", str(tmp_path / "remote"))
    for verb in (lambda: push(old, "origin", ["main"]), lambda: fetch(old, "origin")):
        with pytest.raises(RemoteError, match="names objects by blake3 and this repository by xxh3"):
            verb()
    assert old.refs.names("refs/remotes/") == []
    cloned, _ = Repo.clone(str(tmp_path / "remote"), tmp_path / "clone")
    assert cloned.store.hash.name == "blake3" and cloned.fsck().ok
    remote_add(old, "legacy", str(tmp_path / "legacy"))
    push(old, "legacy", ["main"])
    cloned_old, _ = Repo.clone(str(tmp_path / "legacy"), tmp_path / "clone-old")  # a clone keeps the remote's hash
    assert cloned_old.store.hash.name == "xxh3" and cloned_old.resolve("main") == old.resolve("main")


def _old_repository(tmp_path, vit, cli):
    """A repository in the legacy format, as main made them: a base, adapters, a merge with probes, a
    revert, a tag, a verify report, reflogs."""
    repo = Repo.init(tmp_path / "old", hash="xxh3")
    repo.base_add("vit", vit.base_dir)
    repo.commit(vit.adapter_dir, "a", branch="a", base="vit")
    repo.commit(vit.adapter2_dir, "b", branch="b", base="vit")
    save_file({"inputs": vit.pixels}, str(tmp_path / "probe.safetensors"))
    assert cli(f"merge a b --method regmean --probe {tmp_path}/probe.safetensors --into m", cwd=repo.path).code == 0
    assert cli("merge a b --method task_arithmetic --into m", cwd=repo.path).code == 0
    assert cli("revert m --into m", cwd=repo.path).code == 0
    assert cli("tag v1 m", cwd=repo.path).code == 0
    assert cli("verify m --check integrity", cwd=repo.path).code == 0
    return repo


def _snapshot(repo):
    """What must survive a migration, by content: each ref's log of messages, each commit's tensors' bytes."""
    out = {}
    for name, oid in repo.refs.as_dict("refs/").items():
        log = [e.commit.message for e in repo.log([oid])]
        tensors = {n: bytes(repo.store.read_buffer(e.id)) for n, e in repo.store.read_tree(repo.store.read_commit(oid).tree).tensors.items()}
        out[name] = (log, tensors, len(repo.refs.reflog(name)))
    return out


def test_migrate_converts_everything_bit_identically(tmp_path, vit, cli):
    repo = _old_repository(tmp_path, vit, cli)
    before = _snapshot(repo)
    old_ids = dict(repo.refs.as_dict("refs/"))
    res = cli("migrate --hash blake3 --json", cwd=repo.path)
    assert res.code == 0, res.err
    done = json.loads(res.out)
    assert done["from"] == "xxh3" and done["to"] == "blake3" and done["dropped_reflog_entries"] == 0
    new = Repo.open(repo.path)
    assert new.store.hash.name == "blake3" and all(len(o) == 64 for o in new.store)
    assert _snapshot(new) == before and new.fsck().ok
    mapping = dict(line.split() for line in (repo.path / ".dithub" / "id-map-xxh3-blake3.tsv").read_text().splitlines())
    assert {n: mapping[o] for n, o in old_ids.items()} == new.refs.as_dict("refs/")
    # op records name the new ids: the merge replays, the probe and the inputs found under them
    merges = [e for e in new.log(["m"]) if e.commit.op.name == "merge"]
    for entry in merges:
        commit = entry.commit
        assert all(i in set(new.store) for i in (*commit.op.inputs, *commit.op.data))
        assert replay_merge(new, commit) == commit.tree
    revert = new.store.read_commit(new.resolve("m"))
    assert revert.op.name == "revert" and revert.op.params["reverted"] in set(new.store)  # an id inside the params, mapped
    assert list((repo.path / ".dithub" / "verify").glob("*.json"))[0].stem in set(new.store)  # the report followed its commit
    assert "already" in cli("migrate --hash blake3", cwd=repo.path).err


@pytest.mark.parametrize("where", ["leaves", "objects", "refs"])
def test_a_crash_before_the_switch_leaves_the_old_repository(tmp_path, vit, cli, where):
    from dithub.ops.migrate import migrate

    repo = _old_repository(tmp_path, vit, cli)
    before, refs = _snapshot(repo), repo.refs.as_dict("refs/")

    def crash(at):
        if at == where:
            raise KeyboardInterrupt(f"killed at {at}")

    with pytest.raises(KeyboardInterrupt):
        migrate(repo, "blake3", crash=crash)
    old = Repo.open(repo.path)
    assert old.store.hash.name == "xxh3" and old.refs.as_dict("refs/") == refs and _snapshot(old) == before and old.fsck().ok
    assert cli("log m", cwd=repo.path).code == 0
    migrate(old, "blake3")  # the next attempt discards the half-made copy and succeeds
    assert _snapshot(Repo.open(repo.path)) == before and Repo.open(repo.path).store.hash.name == "blake3"


@pytest.mark.parametrize("where", ["ready", "switch objects", "switch refs", "switch HEAD"])
def test_a_crash_during_the_switch_is_finished_by_the_next_open(tmp_path, vit, cli, where):
    from dithub.ops.migrate import migrate

    repo = _old_repository(tmp_path, vit, cli)
    before = _snapshot(repo)

    def crash(at):
        if at == where:
            raise KeyboardInterrupt(f"killed at {at}")

    with pytest.raises(KeyboardInterrupt):
        migrate(repo, "blake3", crash=crash)
    new = Repo.open(repo.path)  # finishes the switch
    assert new.store.hash.name == "blake3" and _snapshot(new) == before and new.fsck().ok
    assert not (repo.path / ".dithub" / "migrate").exists()


def test_a_hostile_remote_config_is_read_within_bounds(tmp_path, vit):
    repo = Repo.init(tmp_path / "r")
    repo.commit(vit.adapter_dir, "a", branch="main")
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "config.json").write_bytes(b'{"hash": "' + b"x" * (2 << 20) + b'"}')  # 2 MB, unreadable
    remote_add(repo, "origin", str(tmp_path / "remote"))
    with pytest.raises(RemoteError, match="config.json is unreadable or names no known hash"):
        push(repo, "origin", ["main"])
    (tmp_path / "remote" / "config.json").write_text('{"hash": "md5"}')
    with pytest.raises(RemoteError, match="no known hash"):
        fetch(repo, "origin")
    assert repo.refs.names("refs/remotes/") == []
