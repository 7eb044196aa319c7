"""Remotes on a local path and on a real S3-compatible server (moto, started here on 127.0.0.1)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import RefConflict, RemoteError
from dithub.ops.deltas import put_tensor
from dithub.ops.sync import fetch, pull, push, remote_add
from dithub.remote import Location
from dithub.store import Tree

clone = Repo.clone  # a new repository from a remote: the facade builds it

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["path", "s3"])
def where(request, tmp_path):
    """(url, storage options) of a fresh, empty remote."""
    if request.param == "path":
        return str(tmp_path / "remote"), {}
    options = request.getfixturevalue("s3_server")
    return f"s3://adapters/{uuid.uuid4().hex}", options


def _tv(path: Path, seed: int, size: int = 64) -> Path:
    g = torch.Generator().manual_seed(seed)
    save_file({"layer.weight": torch.randn(size, size, generator=g), f"t{seed % 9}.bias": torch.randn(size, generator=g)}, str(path))
    return path


def _base_dir(tmp_path: Path) -> Path:
    import json

    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["TinyNet"], "model_type": "tiny"}))
    save_file({"layer.weight": torch.zeros(64, 64), **{f"t{i}.bias": torch.zeros(64) for i in range(9)}}, str(d / "model.safetensors"))
    return d


@pytest.fixture
def source(tmp_path):
    """A repository with a base and three branches (two commits each)."""
    repo = Repo.init(tmp_path / "src")
    repo.base_add("tiny", _base_dir(tmp_path))
    for b, name in enumerate(("class/cat", "class/dog", "domain/aerial")):
        repo.commit(_tv(tmp_path / f"{b}a.safetensors", 2 * b), f"{name} 1", branch=name, base="tiny")
        repo.commit(_tv(tmp_path / f"{b}b.safetensors", 2 * b + 1), f"{name} 2", branch=name)
    return repo


BRANCHES = ["class/cat", "class/dog", "domain/aerial"]


def test_clone_brings_every_branch_and_the_base(source, where, tmp_path):
    url, options = where
    remote_add(source, "origin", url, options)
    first = push(source, "origin", BRANCHES)
    assert set(first.refs) == {*(f"refs/heads/{b}" for b in BRANCHES), "refs/bases/tiny"}
    assert push(source, "origin", BRANCHES).objects == 0  # nothing missing: nothing travels
    repo, result = clone(url, tmp_path / "clone", options=options)
    assert result.objects == first.objects
    assert {b: repo.resolve(b) for b in BRANCHES} == {b: source.resolve(b) for b in BRANCHES}
    assert repo.bases() == source.bases() and repo.fsck().ok
    assert repo.tree_of("class/dog") == source.tree_of("class/dog")
    assert repo.refs.resolve("refs/remotes/origin/class/cat") == source.resolve("class/cat")
    source.commit(_tv(tmp_path / "new.safetensors", 8), "more", branch="class/cat")
    assert push(source, "origin", ["class/cat"]).objects == 4  # a commit, its tree, its two new tensors
    pull(repo, branch="class/cat")  # the clone's upstream is origin/class/cat: a fast-forward
    assert repo.resolve("class/cat") == source.resolve("class/cat")


def _reachable_without_base(repo: Repo, tip: str) -> set[str]:
    """Commits, trees and tensors reachable from ``tip``, not following ``base`` (an independent walk)."""
    out, stack = set(), [repo.resolve(tip)]
    while stack:
        oid = stack.pop()
        if oid in out:
            continue
        out.add(oid)
        commit = repo.store.read_commit(oid)
        out.add(commit.tree)
        out.update(e.id for e in repo.store.read_tree(commit.tree).tensors.values())
        stack.extend(commit.parents)
    return out


def test_selective_fetch_transfers_only_the_branch(source, where, tmp_path):
    url, options = where
    remote_add(source, "origin", url, options)
    push(source, "origin", BRANCHES)
    repo = Repo.init(tmp_path / "other")
    remote_add(repo, "origin", url, options)
    result = fetch(repo, "origin", ["class/dog"])
    wanted = _reachable_without_base(source, "class/dog")
    assert result.objects == len(wanted) and set(repo.store) == wanted  # counted both ways
    assert repo.refs.resolve("refs/remotes/origin/class/dog") == source.resolve("class/dog")
    assert repo.refs.resolve("refs/remotes/origin/class/cat") is None
    base_tree = source.commit_object("tiny").tree
    assert not repo.store.contains(base_tree)
    report = repo.fsck()
    assert report.ok and report.absent_bases == [base_tree]  # left out on purpose, not damage
    fetch(repo, "origin", ["class/dog"], with_base=True)
    assert repo.store.contains(base_tree)
    with pytest.raises(Exception, match="has no branch 'class/cow'"):
        fetch(repo, "origin", ["class/cow"])


def test_non_fast_forward_push_is_refused_without_force(source, where, tmp_path):
    url, options = where
    remote_add(source, "origin", url, options)
    push(source, "origin", ["class/cat"])
    other, _ = clone(url, tmp_path / "other", options=options)
    other.commit(_tv(tmp_path / "o.safetensors", 50), "theirs", branch="class/cat")
    push(other, "origin", ["class/cat"])  # a fast-forward
    source.commit(_tv(tmp_path / "m.safetensors", 51), "mine", branch="class/cat")
    with pytest.raises(RemoteError, match="push of class/cat to origin rejected: not a fast-forward"):
        push(source, "origin", ["class/cat"])
    assert Location(url, "origin", options).ref_store.read_raw("refs/heads/class/cat") == other.resolve("class/cat")
    push(source, "origin", ["class/cat"], force=True)
    assert Location(url, "origin", options).ref_store.read_raw("refs/heads/class/cat") == source.resolve("class/cat")
    with pytest.raises(RefConflict, match="diverged"):  # pull: the other side has diverged now
        pull(other, "origin", "class/cat")


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "loose"])
def test_a_tampered_remote_object_is_refused(source, where, tmp_path, packed):
    url, options = where
    branch = "class/dog" if packed else "large"
    if not packed:  # a tensor large enough to travel as a loose object
        source.commit(_tv(tmp_path / "large.safetensors", 90, size=640), "large", branch="large")
    remote_add(source, "origin", url, options)
    push(source, "origin", [branch])
    victim = source.tree_of(branch).tensors["layer.weight"].id
    loc = Location(url, "origin", options)
    path, start, end = loc.locate(victim)
    assert (start is not None) == packed and path.endswith(".pack" if packed else victim[2:])
    data = bytearray(loc.fs.cat_file(path))
    data[(end or len(data)) - 1] ^= 0xFF  # the victim's last byte, inside its pack or its own file
    loc.fs.pipe_file(path, bytes(data))
    repo = Repo.init(tmp_path / "other")
    remote_add(repo, "origin", url, options)
    with pytest.raises(RemoteError, match=f"object {victim} from remote origin .* is corrupt"):
        fetch(repo, "origin", [branch])
    assert not repo.store.contains(victim) and repo.refs.resolve(f"refs/remotes/origin/{branch}") is None
    assert repo.fsck().ok


def test_an_object_uploaded_before_what_it_names_is_not_trusted(source, where, tmp_path):
    url, options = where
    remote_add(source, "origin", url, options)
    tip = source.resolve("class/dog")
    loc = Location(url, "origin", options)
    loc.claim_hash(source.store.hash)  # as a push does first
    loc.write_object(tip, source.store.read_buffer(tip))  # as a killed push may leave it
    push(source, "origin", ["class/dog"])
    check, _ = clone(url, tmp_path / "check", options=options)
    assert check.fsck().ok and check.tree_of("class/dog") == source.tree_of("class/dog")


def test_an_interrupted_push_and_fetch_resume(source, where, tmp_path, monkeypatch):
    import dithub.remote.packs

    url, options = where
    remote_add(source, "origin", url, options)
    monkeypatch.setattr(dithub.remote.packs, "PACK_BYTES", 20_000)  # several packs: some arrive, one does not
    real_put = Location._put
    calls = []

    def flaky(self, path, data, what):
        calls.append(path)
        if len(calls) == 4:
            raise RemoteError("connection reset (simulated)")
        return real_put(self, path, data, what)

    monkeypatch.setattr(Location, "_put", flaky)
    with pytest.raises(RemoteError, match="simulated"):
        push(source, "origin", BRANCHES)
    monkeypatch.setattr(Location, "_put", real_put)
    loc = Location(url, "origin", options)
    assert loc.refs() == {}  # refs move last: nothing points at a partial upload
    arrived = loc.object_ids()
    everything = set(source.store)  # the branches and their base: all the fixture made
    assert 0 < len(arrived) < len(everything)
    resumed = push(source, "origin", BRANCHES)
    # only what was missing travelled (objects whose dependencies had not all arrived count as missing)
    assert len(everything - arrived) <= resumed.objects < len(everything) and loc.object_ids() == everything
    repo = Repo.init(tmp_path / "other")
    remote_add(repo, "origin", url, options)
    real_store_put = repo.store.__class__.put
    count = []

    def flaky_put(self, parts):
        count.append(1)
        if len(count) == 5:
            raise OSError("disk went away (simulated)")
        return real_store_put(self, parts)

    monkeypatch.setattr(repo.store.__class__, "put", flaky_put)
    with pytest.raises(OSError, match="simulated"):
        fetch(repo, "origin")
    monkeypatch.setattr(repo.store.__class__, "put", real_store_put)
    assert repo.fsck().ok  # dependencies are stored before what depends on them
    before = len(set(repo.store))
    again = fetch(repo, "origin")
    assert again.objects == len(everything) - before
    assert {b: repo.refs.resolve(f"refs/remotes/origin/{b}") for b in BRANCHES} == {b: source.resolve(b) for b in BRANCHES}


def _history(root: Path, commits: int) -> Repo:
    """One branch of ``commits`` commits, each one small tensor (three objects per commit)."""
    repo = Repo.init(root)
    for i in range(commits):
        tree = repo.store.write_tree(Tree("task_vector", {}, {"w": put_tensor(repo, torch.full((256,), float(i)))}))
        repo.commit_tree(tree, f"step {i}", branch="main")
    return repo


def test_a_long_history_travels_in_a_few_requests(where, tmp_path):
    url, options = where
    repo = _history(tmp_path / "history", 300)
    remote_add(repo, "origin", url, options)
    pushed = push(repo, "origin", ["main"])
    assert pushed.objects == 900 and pushed.requests < 25  # not one request per object (a first push also records the hash)
    loc = Location(url, "origin", options)
    assert loc.object_ids() == set(repo.store) and not loc.fs.find(f"{loc.root}/objects")  # all packed
    cloned, result = clone(url, tmp_path / "clone", options=options)
    assert result.objects == 900 and result.requests < 20
    assert cloned.fsck().ok and cloned.resolve("main") == repo.resolve("main")
    other = Repo.init(tmp_path / "other")  # a selective fetch walks 300 generations, reading the pack once
    remote_add(other, "origin", url, options)
    selective = fetch(other, "origin", ["main"])
    assert selective.objects == 900 and selective.requests < 20
    for i in range(3):  # three more pushes: three more packs; a fetch reads only their indexes
        tree = repo.store.write_tree(Tree("task_vector", {}, {"w": put_tensor(repo, torch.full((256,), -1.0 - i))}))
        repo.commit_tree(tree, f"more {i}", branch="main")
        push(repo, "origin", ["main"])
    again = fetch(other, "origin", ["main"])
    assert again.objects == 9 and other.resolve("refs/remotes/origin/main") == repo.resolve("main")
    assert again.requests <= selective.requests + 3 + 3  # the first pack's index came from the cache
    assert other.fsck().ok


def test_packs_and_their_indexes(tmp_path):
    from dithub.remote.packs import build_packs, decode_index
    from dithub.store import object_id

    objects = [(object_id(d), d) for d in (b"a" * 10, b"b" * 30, b"c" * 5, b"d" * 50)]
    packs = build_packs(objects + objects[:1], limit=40)  # a repeated object is packed once
    assert [len(p.index) for p in packs] == [2, 1, 1] and packs[2].index == {objects[3][0]: (0, 50)}  # 10+30, 5, 50 > limit
    for p in packs:
        assert p.id == object_id(p.data)
        assert decode_index(p.id, p.index_bytes(), "here") == p.index
        for oid, (offset, length) in p.index.items():
            assert object_id(p.data[offset:offset + length]) == oid
    with pytest.raises(RemoteError, match=f"the index of pack {packs[0].id} is damaged"):
        decode_index(packs[0].id, packs[1].index_bytes(), "here")  # names another pack
    with pytest.raises(RemoteError, match="is damaged"):
        decode_index(packs[0].id, b"{not json", "here")


RACER = """
import sys, time
from pathlib import Path
from dithub import Repo
from dithub.ops.sync import push
from dithub.errors import DithubError
repo = Repo.open(sys.argv[1])
flag = Path(sys.argv[2])
while not flag.exists():
    time.sleep(0.005)
try:
    push(repo, "origin", ["main"])
    print("ok")
except DithubError as exc:
    print(type(exc).__name__, exc)
"""


def test_racing_pushes_leave_one_winner_and_one_clear_error(source, where, tmp_path):
    url, options = where
    remote_add(source, "origin", url, options)
    source.refs.set_if_equals("refs/heads/main", source.refs.resolve("refs/heads/main"), source.resolve("class/cat"), "test")
    push(source, "origin", ["main"])
    racers = []
    for i in range(2):
        repo, _ = clone(url, tmp_path / f"racer{i}", options=options)
        repo.commit(_tv(tmp_path / f"r{i}.safetensors", 70 + i), f"racer {i}", branch="main")
        racers.append(repo)
    flag = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(r.path), str(flag)], stdout=subprocess.PIPE, text=True, env=env)
             for r in racers]
    flag.write_text("go")
    outputs = [p.communicate()[0].strip() for p in procs]
    assert sorted(o == "ok" for o in outputs) == [False, True], outputs
    loser = next(o for o in outputs if o != "ok")
    assert loser.startswith(("RefConflict", "RemoteError")) and ("moved" in loser or "fast-forward" in loser or "another push" in loser)
    winner = racers[outputs.index("ok")]
    assert Location(url, "origin", options).ref_store.read_raw("refs/heads/main") == winner.resolve("main")
    check, _ = clone(url, tmp_path / "check", options=options)
    assert check.fsck().ok and check.resolve("main") == winner.resolve("main")


def test_cli_remote_verbs(cli, source, tmp_path):
    root = source.path
    assert cli(["-C", str(root), "remote", "add", "origin", str(tmp_path / "r")]).code == 0
    res = cli(["-C", str(root), "push", "origin", "class/cat", "--json"])
    assert res.code == 0, res.err
    assert "refs/heads/class/cat" in __import__("json").loads(res.out)["refs"]
    res = cli(["clone", str(tmp_path / "r"), str(tmp_path / "c"), "--json"])
    assert res.code == 0, res.err
    assert Repo.open(tmp_path / "c").resolve("class/cat") == source.resolve("class/cat")
    assert cli(["-C", str(root), "branch", "class/cat", "--set-upstream", "origin"]).code == 0
    from dithub.ops.sync import upstream

    assert upstream(Repo.open(root), "class/cat") == ("origin", "class/cat")
    res = cli(["-C", str(root), "fetch", "nowhere"])
    assert res.code == 6 and "no remote 'nowhere'" in res.err
    res = cli(["-C", str(root), "remote", "list", "--json"])
    assert __import__("json").loads(res.out)["origin"]["url"] == str(tmp_path / "r")


KILLED = """
import json, sys
from dithub import Repo
from dithub.ops.sync import push
push(Repo.open(sys.argv[1]), "origin", ["big"])
"""


def test_a_push_killed_midway_resumes(source, where, tmp_path):
    import time

    url, options = where
    remote_add(source, "origin", url, options)
    g = torch.Generator().manual_seed(9)
    save_file({f"part{i}.weight": torch.randn(512, 1024, generator=g) for i in range(48)}, str(tmp_path / "big.safetensors"))
    source.commit(tmp_path / "big.safetensors", "big", branch="big")
    loc = Location(url, "origin", options)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(source.path)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(loc.object_ids()) < 6:
        time.sleep(0.01)
    proc.kill()  # SIGKILL, mid-way through the uploads
    proc.wait()
    assert proc.returncode != 0, "the push finished before it could be killed"
    arrived = len(loc.object_ids())
    assert 0 < arrived < 50 and loc.ref_store.read_raw("refs/heads/big") is None
    resumed = push(source, "origin", ["big"])
    assert resumed.objects <= 50 - arrived + 1  # what had arrived whole is not sent again
    check, _ = clone(url, tmp_path / "check", options=options)
    assert check.fsck().ok and check.tree_of("big") == source.tree_of("big")


def test_bad_remotes_are_clear_errors_within_seconds(source, tmp_path, monkeypatch, s3_server):
    import time

    from dithub.errors import RefNotFound

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup for credentials
    with pytest.raises(RefNotFound, match="no remote 'origin'"):
        fetch(source, "origin")
    for url in ("s3:/adapters/x", "s3://", "nosuchproto://a/b"):
        with pytest.raises(RemoteError, match="malformed URL|cannot be opened"):
            remote_add(source, "bad", url)
    assert "bad" not in __import__("dithub.ops.sync", fromlist=["remotes"]).remotes(source)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    remote_add(source, "down", "s3://adapters/x", {"key": "k", "secret": "s",
                                                    "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}})
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="remote down .*Could not connect"):
        push(source, "down", ["class/cat"])
    assert time.monotonic() - t0 < 20
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    remote_add(source, "nocreds", "s3://adapters/y", {"client_kwargs": s3_server["client_kwargs"]})
    with pytest.raises(RemoteError, match="remote nocreds .*credentials"):
        push(source, "nocreds", ["class/cat"])


def test_progress_bars_know_their_totals_and_reach_them(source, where, tmp_path):
    url, options = where
    g = torch.Generator().manual_seed(5)
    save_file({f"part{i}.weight": torch.randn(512, 1024, generator=g) for i in range(3)}, str(tmp_path / "large.safetensors"))
    source.commit(tmp_path / "large.safetensors", "large", branch="large")  # loose objects, streamed
    bars: dict[str, list[int]] = {}
    totals: dict[str, int] = {}

    def progress(what: str, total: int | None):
        totals[what], bars[what] = total, []
        return bars[what].append

    remote_add(source, "origin", url, options)
    pushed = push(source, "origin", [*BRANCHES, "large"], progress=progress)
    repo = Repo.init(tmp_path / "other")
    remote_add(repo, "origin", url, options)
    fetched = fetch(repo, "origin", ["large"], progress=progress)
    assert any(t and t > 6 << 20 for t in totals.values())  # the three 2 MB tensors, both ways
    for what, steps in bars.items():
        assert totals[what] is not None and sum(steps) == totals[what], what
    assert pushed.bytes == sum(sum(s) for w, s in bars.items() if w.startswith("pushing"))
    head = source.resolve("large")
    walked = source.store.size(head) + source.store.size(source.commit_object("large").tree)  # read while planning
    assert fetched.bytes == sum(sum(s) for w, s in bars.items() if w.startswith("fetching")) + walked


def test_a_lock_being_written_is_not_taken_for_a_stale_one(tmp_path):
    """A pusher creates its lock (O_EXCL) and then writes its time into it; another pusher that reads
    the lock in between sees it empty. That must count as held, not as stale (time 0): taking it over
    let two racing pushes both succeed."""
    from dithub.errors import RefConflict

    loc = Location(str(tmp_path / "remote"), "origin")
    lock = Path(loc._ref("refs/heads/main") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(b"")  # created, not yet written
    with pytest.raises(RefConflict, match="being updated by another push"):
        loc.ref_store.compare_and_swap("refs/heads/main", None, "0" * 32)
    assert lock.exists() and loc.ref_store.read_raw("refs/heads/main") is None


def test_a_remote_ref_file_that_holds_no_id_reads_as_absent_and_is_overwritten(tmp_path):
    """What a remote holds is untrusted: a ref file with garbage is no ref (never compared with, or
    printed in a conflict), so a push creating that branch replaces it, as before the refs became a store."""
    loc = Location(str(tmp_path / "remote"), "origin")
    path = Path(loc._ref("refs/heads/main"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x1b[31mnot an id\n")
    assert loc.ref_store.read_raw("refs/heads/main") is None
    loc.ref_store.compare_and_swap("refs/heads/main", None, "0" * 32)
    assert loc.ref_store.read_raw("refs/heads/main") == "0" * 32
