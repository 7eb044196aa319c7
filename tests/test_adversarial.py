"""Attacks and faults, gathered: a hostile remote, a hostile pull request, a damaged disk, bad input.

Each test reproduces an attack or a fault first found against dithub (issue 17); the next one
found lands here too. Fixtures are tiny: a base of a few small tensors, two or three commits.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.errors import BadInput, RemoteError
from dithub.ops.sync import fetch, push, remote_add

clone = Repo.clone  # a new repository from a remote: the facade builds it

HEADS = "refs/heads/"


def _tv(path: Path, seed: int, size: int = 16) -> Path:
    g = torch.Generator().manual_seed(seed)
    save_file({"layer.weight": torch.randn(size, size, generator=g), "layer.bias": torch.randn(size, generator=g)}, str(path))
    return path


def _base_dir(tmp_path: Path, size: int = 16) -> Path:
    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["TinyNet"], "model_type": "tiny"}))
    save_file({"layer.weight": torch.zeros(size, size), "layer.bias": torch.zeros(size)}, str(d / "model.safetensors"))
    return d


@pytest.fixture
def source(tmp_path):
    """A repository with a base and two branches."""
    repo = Repo.init(tmp_path / "src")
    repo.base_add("tiny", _base_dir(tmp_path))
    repo.commit(_tv(tmp_path / "a.safetensors", 1), "a", branch="class/a", base="tiny")
    repo.commit(_tv(tmp_path / "b.safetensors", 2), "b", branch="class/b", base="tiny")
    return repo


def _s3_client(options: dict):
    import boto3

    kw = options["client_kwargs"]
    return boto3.client("s3", endpoint_url=kw["endpoint_url"], region_name=kw["region_name"],
                        aws_access_key_id=options["key"], aws_secret_access_key=options["secret"])


# -- 1. ref names from a remote ---------------------------------------------------------------------


def test_s3_ref_key_with_dot_dot_writes_nothing_outside_the_repository(source, s3_server, tmp_path, cli):
    prefix = uuid.uuid4().hex
    url = f"s3://adapters/{prefix}"
    remote_add(source, "origin", url, s3_server)
    push(source, "origin", ["class/a", "class/b"])
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    commit = source.resolve("class/a")
    s3 = _s3_client(s3_server)
    for ns in ("refs/heads/", "refs/tags/"):  # ../ x 16 climbs out of any repository, then an absolute path
        s3.put_object(Bucket="adapters", Key=f"{prefix}/{ns}" + "../" * 16 + str(victim).lstrip("/"), Body=f"{commit}\n".encode())
    (tmp_path / "outside" / "fresh").mkdir()
    created = tmp_path / "outside" / "fresh" / "new"
    s3.put_object(Bucket="adapters", Key=f"{prefix}/refs/heads/" + "../" * 16 + str(created).lstrip("/"), Body=f"{commit}\n".encode())

    repo = Repo.init(tmp_path / "dst")
    remote_add(repo, "origin", url, s3_server)
    result = fetch(repo, "origin")
    assert victim.read_text() == "precious\n" and not created.exists()
    assert repo.refs.resolve("refs/remotes/origin/class/a") == commit  # the rest of the fetch proceeded
    assert len(result.skipped) == 3 and all(".." in name for name, _why in result.skipped)
    assert repo.fsck().ok

    res = cli(["fetch", "origin"], cwd=repo.path)  # the CLI warns once per skipped name and exits 0
    assert res.code == 0 and res.err.count("skipped") == 3 and "../" in res.err
    clone(url, tmp_path / "cloned", options=s3_server)
    assert victim.read_text() == "precious\n" and not created.exists()


HOSTILE_NAMES = ["refs/heads/sp ace", "refs/heads/ctl\x01x", "refs/heads/.hidden", "refs/heads/a:b", "refs/heads/t~1",
                 "refs/HEADX", "refs/tags/x.lock", "refs/bases/" + "n" * 300]


def test_ref_names_branch_would_refuse_are_never_created_from_a_path_remote(source, tmp_path):
    url = str(tmp_path / "remote")
    remote_add(source, "origin", url)
    push(source, "origin", ["class/a"])
    commit = source.resolve("class/a")
    for name in HOSTILE_NAMES:
        path = Path(url) / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(commit + "\n")
        except OSError:  # a name this file system refuses: nothing to serve
            pass
    repo = Repo.init(tmp_path / "dst")
    remote_add(repo, "origin", url)
    result = fetch(repo, "origin")
    names = repo.refs.names("refs/")
    assert names == ["refs/bases/tiny", "refs/remotes/origin/class/a"]
    skipped = {name for name, _why in result.skipped}
    assert {"refs/heads/sp ace", "refs/heads/.hidden", "refs/heads/a:b", "refs/heads/t~1", "refs/HEADX"} <= skipped
    assert repo.fsck().ok


def test_a_remote_whose_every_ref_is_invalid_is_a_remote_error(source, tmp_path, cli):
    url = tmp_path / "remote"
    remote_add(source, "origin", str(url))
    push(source, "origin", ["class/a"])
    commit = source.resolve("class/a")
    for p in list((url / "refs").rglob("*")):
        if p.is_file():
            p.unlink()
    (url / "refs" / "heads" / "bad name").write_text(commit + "\n")
    with pytest.raises(RemoteError, match="no valid ref"):
        clone(str(url), tmp_path / "c1")
    repo = Repo.init(tmp_path / "dst")
    remote_add(repo, "origin", str(url))
    assert cli(["fetch", "origin"], cwd=repo.path).code == 10
    assert repo.refs.names("refs/") == []
    assert cli(["clone", str(url), str(tmp_path / "c2")]).code == 10


@pytest.mark.parametrize("name", ["x" * 300, "a/" * 2000 + "b", "ok/" + "y" * 256])
def test_over_long_names_typed_locally_are_bad_input(source, cli, name):
    for args in (["branch", name, "class/a"], ["tag", name, "class/a"], ["remote", "add", name, "somewhere"],
                 ["base", "add", name, "nowhere"]):
        res = cli(args, cwd=source.path)
        assert res.code == 3, (args[0], res.err)
        assert "internal error" not in res.err


def test_push_never_moves_a_remote_ref_it_cannot_track_locally(source, tmp_path):
    long_branch = "/".join(["c" * 250] * 4)  # a valid local name: refs/heads/ + 1,003 bytes
    source.create_branch(long_branch, "class/a")
    url = str(tmp_path / "remote")
    remote_add(source, "r" * 40, url)  # refs/remotes/rrr…/<branch> would pass the length limit
    with pytest.raises(BadInput, match="refs/remotes/"):
        push(source, "r" * 40, [long_branch])
    assert not (Path(url) / "refs").exists() or not any(p.is_file() for p in (Path(url) / "refs").rglob("*"))


def test_a_ref_path_cannot_leave_the_refs_folder(source):
    with pytest.raises(BadInput):
        source.refs.set_if_equals("refs/heads/../../../escape", None, source.resolve("class/a"), "attack")
    assert not (source.path / "escape").exists() and not (source.path / ".dithub" / "escape").exists()
    assert source.refs.read_raw("refs/../config.json") is None  # a read of such a name finds nothing


# -- 2. the git hooks and the policy from a checked-out tree ------------------------------------------


def _host(repo: Repo):
    """A git repository around ``repo`` (its worktree is the dithub repository's folder)."""
    import git

    host = git.Repo.init(repo.path)
    with host.config_writer() as c:
        c.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    (repo.path / ".gitignore").write_text(".dithub/\n")
    return host


def _git_commit(repo: Repo, host, message: str, extra: tuple[str, ...] = ()) -> None:
    (repo.path / "notes.txt").write_text(message)
    host.index.add(["notes.txt", ".gitignore", *extra])
    host.git.commit("-m", message)  # the git CLI: runs the hooks


def _nan_main(repo: Repo, tmp_path: Path) -> None:
    t = {"layer.weight": torch.full((16, 16), float("nan")), "layer.bias": torch.zeros(16)}
    save_file(t, str(tmp_path / "nan.safetensors"))
    repo.commit(tmp_path / "nan.safetensors", "nan", branch="main", base="tiny")


def test_a_module_in_the_worktree_cannot_shadow_the_hooks_dithub(source, tmp_path):
    import git

    from dithub.verify.hooks import install

    host = _host(source)
    _nan_main(source, tmp_path)
    install(source)
    (source.path / "rich.py").write_text("raise SystemExit(0)\n")  # a pull request's file: would end the hook with 0
    (source.path / "typer.py").write_text("raise SystemExit(0)\n")
    with pytest.raises(git.GitCommandError) as blocked:
        _git_commit(source, host, "try", ("rich.py", "typer.py"))
    assert "numeric.finite" in blocked.value.stderr  # verify ran, and failed the commit
    assert not host.head.is_valid()  # no commit was made


def test_a_policy_from_the_worktree_cannot_name_code(source, tmp_path):
    import git

    from dithub.verify.hooks import install

    host = _host(source)
    marker = tmp_path / "pwned"
    (source.path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndef probe():\n    return []\n")
    (source.path / "dithub.toml").write_text('[verify]\nprobe = "evilmod:probe"\nmin_accuracy = 0.0\n')
    source.create_branch("main", "class/a")
    install(source)
    with pytest.raises(git.GitCommandError) as blocked:
        _git_commit(source, host, "policy names code", ("evilmod.py", "dithub.toml"))
    assert "--allow-code" in blocked.value.stderr and not marker.exists()
    install(source, allow_code=True)  # the user opts in: still never from the worktree
    hook = (Path(host.git_dir) / "hooks" / "pre-commit").read_text()
    assert "--allow-code" in hook
    with pytest.raises(git.GitCommandError) as blocked:
        _git_commit(source, host, "policy names code, opted in", ("evilmod.py", "dithub.toml"))
    assert "evilmod" in blocked.value.stderr and not marker.exists()


def test_policy_code_needs_the_opt_in_and_never_comes_from_the_repository(source, tmp_path, monkeypatch):
    from dithub.verify import load_policy

    marker = tmp_path / "pwned"
    (source.path / "evilmetric.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndef m(model, probe):\n    return 1.0\n")
    path = source.path / "dithub.toml"
    path.write_text('[verify]\nmetric = "evilmetric:m"\n')
    with pytest.raises(BadInput, match="allow-code"):
        load_policy(path)
    path.write_text('[tasks]\n"class/*" = "evilmetric:m"\n')
    with pytest.raises(BadInput, match="allow-code"):
        load_policy(path)
    monkeypatch.syspath_prepend(str(source.path))  # even on sys.path, a module inside the repository is refused
    from dithub.eval.entry import load_entry_point

    with pytest.raises(BadInput, match="inside"):
        load_entry_point("evilmetric:m", "metric", forbid=[source.path])
    assert not marker.exists()


def test_a_hook_that_cannot_run_verify_fails_the_git_command(source, tmp_path):
    import shutil

    import git

    from dithub.verify.hooks import install

    host = _host(source)
    install(source)
    _git_commit(source, host, "fine")  # nothing changed on a covered branch that fails: passes
    shutil.rmtree(source.path / ".dithub")
    with pytest.raises(git.GitCommandError):
        _git_commit(source, host, "no repository")


# -- 3. damaged objects do not travel, and the repair repairs -------------------------------------------


@pytest.fixture(params=["path", "s3"])
def where(request, tmp_path):
    """(url, storage options) of a fresh, empty remote."""
    if request.param == "path":
        return str(tmp_path / "remote"), {}
    return f"s3://adapters/{uuid.uuid4().hex}", request.getfixturevalue("s3_server")


def _damage(repo: Repo, oid: str, how: str) -> None:
    """Flip one byte of (or truncate) the stored object ``oid``, as a failing disk would."""
    import os

    path = repo.store.path(oid)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-100:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("size", ["big", "small"])
def test_a_damaged_object_never_travels(source, where, tmp_path, how, size, cli):
    from dithub.remote import Location

    url, options = where
    source.commit(_tv(tmp_path / "big.safetensors", 5, size=600 if size == "big" else 16), "big", branch="big")
    victim = source.tree_of("big").tensors["layer.weight"].id
    assert (source.store.size(victim) >= 1 << 20) == (size == "big")  # a loose object on the remote, or a packed one
    _damage(source, victim, how)
    remote_add(source, "origin", url, options)
    res = cli(["push", "origin", "big"], cwd=source.path)
    assert res.code == 7 and victim in res.err, res.err
    loc = Location(url, "origin", options)
    assert loc.refs() == {} and victim not in loc.object_ids()  # no ref moved; the damaged bytes are not there


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_re_committing_repairs_a_damaged_object(source, tmp_path, how):
    from dithub.errors import CorruptObject

    victim = source.tree_of("class/a").tensors["layer.weight"].id
    _damage(source, victim, how)
    if how == "flip":  # same size: found by the next read of it (reads re-hash), not by a write
        with pytest.raises(CorruptObject, match=victim):
            source.export("class/a", tmp_path / "out")
    source.commit(_tv(tmp_path / "again.safetensors", 1), "the same tensors again", branch="again", base="tiny")
    assert source.store.read_tensor(victim).shape == (16, 16)  # repaired: it reads and re-hashes
    assert source.fsck().ok


def test_fetch_and_fsck_repair_bring_damaged_objects_back(source, where, tmp_path, cli):
    from dithub.errors import CorruptObject

    url, options = where
    source.commit(_tv(tmp_path / "big.safetensors", 5, size=600), "big", branch="big")  # no base: another shape
    remote_add(source, "origin", url, options)
    push(source, "origin", ["class/a", "class/b", "big"])
    repo, _ = clone(url, tmp_path / "clone", options=options)
    big = repo.tree_of("big").tensors["layer.weight"].id
    small = repo.tree_of("class/a").tensors["layer.weight"].id
    bias = repo.tree_of("class/b").tensors["layer.bias"].id
    for oid, how in ((big, "flip"), (small, "truncate"), (bias, "flip")):
        _damage(repo, oid, how)
    with pytest.raises(CorruptObject):  # a read finds the small one
        repo.store.read_tensor(bias)
    fetch(repo, "origin")  # a fetch that has the bytes at hand puts it back
    assert repo.store.read_tensor(bias).shape == (16,)
    assert not repo.fsck().ok
    res = cli(["fsck", "--repair", "origin"], cwd=repo.path)
    assert res.code == 0, res.err
    assert big in res.out and small in res.out and "repaired 2" in res.out
    assert repo.fsck().ok and repo.store.read_tensor(big).shape == (600, 600)
    _damage(repo, small, "flip")
    res = cli(["fsck", "--repair"], cwd=repo.path)  # no remote named: origin, the only one
    assert res.code == 0 and small in res.out and repo.fsck().ok


def test_fsck_reports_an_unreadable_object_as_damage(source, monkeypatch, cli):
    import errno

    import dithub.store.files as files

    victim = source.tree_of("class/a").tensors["layer.weight"].id
    real = files.open_read

    def denied(path):
        if str(path).endswith(victim[2:]):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(files, "open_read", denied)
    report = source.fsck()
    assert [oid for oid, _why in report.corrupt] == [victim] and "ermission denied" in report.corrupt[0][1]
    res = cli(["fsck"], cwd=source.path)
    assert res.code == 7 and victim in res.out


# -- 4. what a remote sends is checked before it is trusted ---------------------------------------------


def _hostile(tmp_path: Path, objects: list[bytes], tip: str, where: tuple[str, dict] | None = None) -> tuple[str, dict]:
    """A remote (a path, or ``where``) holding ``objects`` as loose objects and branch main at ``tip``."""
    from dithub.remote import Location
    from dithub.store import DEFAULT_HASH

    url, options = where or (str(tmp_path / "hostile"), {})
    loc = Location(url, "hostile", options)
    loc.claim_hash(DEFAULT_HASH)  # a remote of new repositories' hash (blake3)
    for data in objects:
        loc.write_object(DEFAULT_HASH.of(data), data)
    loc.fs.makedirs(f"{loc.root}/refs/heads", exist_ok=True)
    loc.fs.pipe_file(f"{loc.root}/refs/heads/main", f"{tip}\n".encode())
    return url, options


def _commit(tree: str, parents: tuple[str, ...] = ()) -> bytes:
    from dithub.store import Commit

    return Commit(tree, list(parents), None, "mallory", 0.0, "hostile").encode()


def _tensor(dtype: str, shape: list[int], data: bytes) -> bytes:
    head = b"tensor " + json.dumps({"dtype": dtype, "shape": shape}, separators=(",", ":")).encode()
    head += b" " * (-(len(head) + 1) % 64) + b"\n"
    return head + data


def _fetch_fails_cleanly(tmp_path: Path, url: str, options: dict, cli, what: str) -> Repo:
    repo = Repo.init(tmp_path / f"victim-{uuid.uuid4().hex[:6]}")
    remote_add(repo, "hostile", url, options)
    with pytest.raises(RemoteError, match=what):
        fetch(repo, "hostile")
    assert repo.refs.names("refs/") == [] and repo.fsck().ok
    res = cli(["fetch", "hostile"], cwd=repo.path)
    assert res.code == 10, res.err
    res = cli(["fsck"], cwd=repo.path)
    assert res.code == 0, res.out + res.err
    return repo


def test_a_big_tree_naming_missing_tensors_is_never_stored(tmp_path, cli):
    from dithub.store import DEFAULT_HASH, Tree, TensorEntry

    entries = {f"layer{i}.weight": TensorEntry(f"{i:032x}", "F32", (4, 4)) for i in range(20_000)}
    tree = Tree("task_vector", {}, entries).encode()
    assert len(tree) > 1 << 20  # a loose object on the remote, as big tensors are
    url, options = _hostile(tmp_path, [tree, _commit(DEFAULT_HASH.of(tree))], DEFAULT_HASH.of(_commit(DEFAULT_HASH.of(tree))))
    repo = _fetch_fails_cleanly(tmp_path, url, options, cli, "lacks object")
    assert not repo.store.contains(DEFAULT_HASH.of(tree))


def test_a_tree_nested_200000_levels_is_refused(tmp_path, cli):
    from dithub.store import DEFAULT_HASH

    tree = b'tree\n{"config":' + b"[" * 200_000 + b"]" * 200_000 + b',"kind":"task_vector","tensors":{}}'
    url, options = _hostile(tmp_path, [tree, _commit(DEFAULT_HASH.of(tree))], DEFAULT_HASH.of(_commit(DEFAULT_HASH.of(tree))))
    _fetch_fails_cleanly(tmp_path, url, options, cli, "nested|malformed|not valid")
    # and one already on disk (from an older dithub) is damage fsck reports, not a crash
    repo = Repo.init(tmp_path / "old")
    repo.store.write(tree)
    res = cli(["fsck"], cwd=repo.path)
    assert res.code == 7 and DEFAULT_HASH.of(tree) in res.out and "nested too deeply" in res.out  # damage, named; no crash
    assert [oid for oid, _ in repo.fsck().corrupt] == [DEFAULT_HASH.of(tree)]


def test_a_tensor_header_claiming_2_to_the_60_elements_is_refused(tmp_path, cli):
    from dithub.store import DEFAULT_HASH, Tree, TensorEntry

    bomb = _tensor("F32", [1 << 30, 1 << 30], b"\0" * 64)
    entry = TensorEntry(DEFAULT_HASH.of(bomb), "F32", (1 << 30, 1 << 30))
    tree = Tree("task_vector", {}, {"w": entry}).encode()
    url, options = _hostile(tmp_path, [bomb, tree, _commit(DEFAULT_HASH.of(tree))], DEFAULT_HASH.of(_commit(DEFAULT_HASH.of(tree))))
    repo = _fetch_fails_cleanly(tmp_path, url, options, cli, "tensor")
    assert not repo.store.contains(DEFAULT_HASH.of(bomb))


@pytest.mark.parametrize("lie", ["commit", "shape"])
def test_a_tree_entry_must_name_a_tensor_of_its_shape(tmp_path, cli, lie):
    from dithub.store import DEFAULT_HASH, Tree, TensorEntry

    real = _tensor("F32", [2, 2], b"\0" * 16)
    inner_tree = Tree("task_vector", {}, {"w": TensorEntry(DEFAULT_HASH.of(real), "F32", (2, 2))}).encode()
    inner = _commit(DEFAULT_HASH.of(inner_tree))
    target = (DEFAULT_HASH.of(inner), "F32", (2, 2)) if lie == "commit" else (DEFAULT_HASH.of(real), "F32", (4, 1))
    tree = Tree("task_vector", {}, {"w": TensorEntry(*target)}).encode()
    tip = _commit(DEFAULT_HASH.of(tree))
    url, options = _hostile(tmp_path, [real, inner_tree, inner, tree, tip], DEFAULT_HASH.of(tip))
    _fetch_fails_cleanly(tmp_path, url, options, cli, "tensor|shape")


def test_an_oversized_ref_file_is_never_read(source, tmp_path, cli):
    url = tmp_path / "remote"
    remote_add(source, "origin", str(url))
    push(source, "origin", ["class/a"])
    with open(url / "refs" / "heads" / "huge", "wb") as f:
        f.truncate(300 << 20)  # 300 MB (sparse): listed with its size, never read
    repo = Repo.init(tmp_path / "dst")
    remote_add(repo, "origin", str(url))
    result = fetch(repo, "origin")
    assert ("refs/heads/huge", "its file is over 4096 bytes") in result.skipped
    assert repo.refs.resolve("refs/remotes/origin/class/a") == source.resolve("class/a")
    local = repo.path / ".dithub" / "refs" / "heads" / "big"
    with open(local, "wb") as f:
        f.truncate(300 << 20)
    res = cli(["log", "big"], cwd=repo.path)
    assert res.code == 7 and "over 4096 bytes" in res.err


@pytest.mark.parametrize("which", ["loose", "pack"])
def test_an_object_deleted_on_the_remote_is_a_remote_error(source, tmp_path, cli, which):
    url = tmp_path / "remote"
    source.commit(_tv(tmp_path / "big.safetensors", 5, size=600), "big", branch="big")
    remote_add(source, "origin", str(url))
    push(source, "origin", ["big", "class/a"])
    if which == "loose":
        victim = source.tree_of("big").tensors["layer.weight"].id
        (url / "objects" / victim[:2] / victim[2:]).unlink()
    else:
        victim = next(p.stem for p in (url / "packs").glob("*.pack"))
        (url / "packs" / f"{victim}.pack").unlink()
    res = cli(["clone", str(url), str(tmp_path / "c")])
    assert res.code == 10 and victim in res.err, res.err


# -- 5. faults of the machine are errors, not crashes ----------------------------------------------------


def _fault(code: int):
    import os

    def raise_it(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    return raise_it


@pytest.mark.parametrize("code, point, args, named", [
    ("ENOSPC", "pwrite", ["commit", "{tv}", "-m", "x", "-b", "more"], "disk is full"),
    ("EROFS", "open_fd", ["branch", "newbranch", "class/a"], "read-only"),
    ("EACCES", "open_read", ["export", "class/a", "-o", "{out}"], "permission denied"),
    ("EFBIG", "write", ["tag", "v1", "class/a"], "too large"),
])
def test_storage_faults_are_one_line_with_exit_12(source, tmp_path, cli, monkeypatch, code, point, args, named):
    import errno

    import dithub.store.files as files

    tv = _tv(tmp_path / "more.safetensors", 9)
    monkeypatch.setattr(files, point, _fault(getattr(errno, code)))
    res = cli([a.format(tv=tv, out=tmp_path / "out") for a in args], cwd=source.path)
    assert res.code == 12, res.err
    assert named in res.err and str(source.path) in res.err and "internal error" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    monkeypatch.undo()
    assert source.fsck().ok and source.fsck().temp_files == 0 and not source.refs.locks()


def test_a_file_size_limit_is_a_storage_error(source, tmp_path):
    import subprocess
    import sys

    big = _tv(tmp_path / "big.safetensors", 3, size=400)  # 640 KB of tensor data
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); from dithub.cli import main; "
            f"sys.exit(main(['-C', {str(source.path)!r}, 'commit', {str(big)!r}, '-m', 'big', '-b', 'big']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 12 and "too large" in proc.stderr, proc.stderr
    assert source.fsck().ok and "big" not in source.branches()


def test_clone_into_a_full_disk_blames_the_disk_and_resumes(source, where, tmp_path, monkeypatch, cli):
    import errno

    import dithub.store.files as files

    url, options = where
    source.commit(_tv(tmp_path / "big.safetensors", 5, size=600), "big", branch="big")
    remote_add(source, "origin", url, options)
    push(source, "origin", ["class/a", "class/b", "big"])
    monkeypatch.setattr(files, "receive_file", _fault(errno.ENOSPC))  # where downloads fill their files
    target = tmp_path / "clone"
    res = cli(["clone", url] + [a for k, v in options.items() for a in ("-o", f"{k}={json.dumps(v)}")] + [str(target)])
    assert res.code == 12 and "disk is full" in res.err and str(target) in res.err and "remote" not in res.err.split("—")[0]
    monkeypatch.undo()
    repo, _ = clone(url, target, options=options)  # the same clone again resumes into what arrived
    assert repo.branches() == source.branches() and repo.fsck().ok


def test_a_killed_clone_can_be_rerun(source, tmp_path, monkeypatch):
    import dithub.ops.sync as sync

    url = str(tmp_path / "remote")
    remote_add(source, "origin", url)
    push(source, "origin", ["class/a", "class/b"])
    real = sync.fetch

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill after the objects arrived, before the branches were made

    monkeypatch.setattr(sync, "fetch", killed)
    with pytest.raises(KeyboardInterrupt):
        clone(url, tmp_path / "c")
    monkeypatch.undo()
    repo, _ = clone(url, tmp_path / "c")
    assert repo.branches() == source.branches() and repo.fsck().ok
    with pytest.raises(BadInput, match="not empty"):  # a finished clone is not resumed into
        clone(url, tmp_path / "c")


def test_a_full_remote_leaves_no_temp_files_and_remote_refs_are_replaced_atomically(source, tmp_path, monkeypatch):
    import errno
    import os

    from fsspec.implementations.local import LocalFileSystem

    from dithub.errors import DithubError

    url = tmp_path / "remote"
    remote_add(source, "origin", str(url))
    push(source, "origin", ["class/a"])
    ref = url / "refs" / "heads" / "class" / "a"
    before = os.stat(ref).st_ino
    source.commit(_tv(tmp_path / "a2.safetensors", 11), "a2", branch="class/a")
    push(source, "origin", ["class/a"])
    assert os.stat(ref).st_ino != before  # a new file renamed over the old: a reader sees one or the other
    assert ref.read_text().strip() == source.resolve("class/a")

    real_mv = LocalFileSystem.mv

    def full(self, src, dst, *a, **k):
        if "/objects/" in str(dst) or "/packs/" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mv(self, src, dst, *a, **k)

    monkeypatch.setattr(LocalFileSystem, "mv", full)
    source.commit(_tv(tmp_path / "a3.safetensors", 12), "a3", branch="class/a")
    with pytest.raises(DithubError, match="full"):
        push(source, "origin", ["class/a"])
    assert not [p for p in url.rglob("*") if ".tmp-" in p.name]


# -- 6. parameters are checked against their ranges before anything is read or written ---------------------


@pytest.mark.parametrize("method, param, value, allowed", [
    ("ties", "density", "0", "(0, 1]"), ("ties", "density", "-1", "(0, 1]"), ("ties", "density", "2", "(0, 1]"),
    ("task_arithmetic", "alpha", "nan", "finite"), ("task_arithmetic", "alpha", "inf", "finite"),
    ("dare", "p", "1", "[0, 1)"), ("dare", "combine", "max", "ta, ties"), ("dare", "seed", "-3", "[0, "),
    ("breadcrumbs", "gamma", "1", "[0, 1)"), ("iso_cts", "common", "1.5", "[0, 1]"), ("magmax", "alpha", "-inf", "finite"),
    ("core_space", "rank", "-1", "[0, "), ("core_space", "rule", "opcm", "task_arithmetic"), ("ema", "beta", "1.01", "[0, 1]"),
])
def test_merge_parameters_out_of_range_are_refused_before_anything_is_written(source, cli, method, param, value, allowed):
    objects, refs = set(source.store), source.refs.as_dict()
    res = cli(["merge", "class/a", "class/b", "--method", method, "-p", f"{param}={value}", "--into", "m"], cwd=source.path)
    assert res.code == 3, res.err
    line = res.err.strip()
    assert len(line.splitlines()) == 1 and repr(param) in line and value in line and allowed in line
    assert set(source.store) == objects and source.refs.as_dict() == refs


def test_non_finite_scales_are_refused_everywhere(source, cli):
    objects = set(source.store)
    for args in (["merge", "class/a", "class/b", "--method", "ties", "--alpha", "nan", "--into", "m"],
                 ["merge", "--method", "opcm", "--into", "seq", "class/a", "-p", "alpha=inf"],
                 ["merge", "--method", "opcm", "--into", "seq", "class/a", "-p", "alpha=2"],
                 ["rebase", "class/a", "--onto", "tiny", "--alpha", "nan"],
                 ["revert", "class/a", "--method", "negation", "--alpha", "inf"]):
        res = cli(args, cwd=source.path)
        assert res.code == 3 and ("finite" in res.err or "outside [0, 1]" in res.err), (args, res.err)
    assert set(source.store) == objects
    (source.path / "dithub.toml").write_text("[verify]\nmin_accuracy = nan\n")
    res = cli(["verify", "class/a"], cwd=source.path)
    assert res.code == 3 and "min_accuracy" in res.err


def test_every_registered_parameter_declares_what_it_may_be():
    from dithub.algorithms.merge import REGISTRY
    from dithub.algorithms.rebase.registry import REGISTRY as REBASES

    for algo in [*REGISTRY.values(), *REBASES.values()]:
        for name, default in algo.defaults.items():
            if isinstance(default, bool):
                continue
            if isinstance(default, str):
                assert default in algo.choices.get(name, ()), (algo.name, name)
            else:
                assert name in algo.ranges and algo.ranges[name].contains(default), (algo.name, name)
    from dithub.algorithms.merge.catalog import CORE_RULES

    assert set(CORE_RULES) == {n for n, m in REGISTRY.items() if m.space == "full"}  # what Core Space may run


def test_an_oversized_pack_index_is_never_read(source, tmp_path):
    url = tmp_path / "remote"
    remote_add(source, "origin", str(url))
    push(source, "origin", ["class/a"])
    with open(url / "packs" / f"{'f' * 32}.idx", "wb") as f:
        f.truncate(300 << 20)  # sparse: listed with its size, never read
    repo = Repo.init(tmp_path / "dst")
    remote_add(repo, "origin", str(url))
    with pytest.raises(RemoteError, match="larger than any push writes"):
        fetch(repo, "origin")
    assert repo.fsck().ok
