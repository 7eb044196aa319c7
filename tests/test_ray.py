"""Past one machine (issue 22): merges, rebases and verification as tasks on a real local Ray
cluster, bit-identical to the local executor; a worker killed mid-task is retried; a task that fails
for good commits nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import commit_task_vectors
from dithub import Repo

ray = pytest.importorskip("ray", reason="install the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of two CPUs for this module (started once: a few seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_tv(path: Path, i: int) -> dict:
    g = torch.Generator().manual_seed(50 + i)
    tv = {f"layers.{j}.w": torch.randn(48, 24, generator=g) for j in range(6)} | {"norm": torch.randn(24, generator=g)}
    save_file(tv, str(path))
    return tv


def test_a_merge_of_8_task_vectors_on_ray_is_the_local_one(cluster, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=8)
    revs = [f"task/{i}" for i in range(8)]
    for method, params in (("ties", ["-p", "density=0.3"]), ("dare", ["-p", "combine=ties"]), ("tsv", [])):
        local = cli(["-C", str(repo.path), "merge", *revs, "--method", method, *params, "--into", f"local/{method}"])
        remote = cli(["-C", str(repo.path), "merge", *revs, "--method", method, *params, "--into", f"ray/{method}",
                      "--executor", "ray"])
        assert local.code == 0 and remote.code == 0, remote.err
        assert repo.commit_object(f"ray/{method}").tree == repo.commit_object(f"local/{method}").tree, method
        assert repo.commit_object(f"ray/{method}").op.params == repo.commit_object(f"local/{method}").op.params
    assert repo.fsck().ok


def test_a_killed_worker_is_retried_and_a_failed_task_commits_nothing(cluster, tmp_path, cli, monkeypatch):
    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=3)
    revs = ["task/0", "task/1", "task/2"]
    local = repo.merge(revs, "ties", into="local")
    markers = tmp_path / "killed"
    monkeypatch.setenv("DITHUB_TEST_KILL_ONCE", str(markers))  # each task's first attempt kills its worker
    res = cli(["-C", str(repo.path), "merge", *revs, "--method", "ties", "--into", "survived", "--executor", "ray"])
    assert res.code == 0, res.err
    assert len(list(markers.iterdir())) >= 2  # workers really died, and their tasks ran again
    assert repo.commit_object("survived").tree == repo.commit_object(local).tree
    monkeypatch.delenv("DITHUB_TEST_KILL_ONCE")
    victim = repo.tree_of("task/1").tensors["layers.3.w"].id  # one input object gone: that task fails, every retry alike
    (repo.path / ".dithub" / "objects" / victim[:2] / victim[2:]).unlink()
    failed = cli(["-C", str(repo.path), "merge", *revs, "--method", "ties", "--into", "broken", "--executor", "ray"])
    assert failed.code == 5 and victim in failed.err and len(failed.err.strip().splitlines()) == 1  # ObjectNotFound
    assert "broken" not in repo.branches()


def test_rebase_all_and_verify_all_on_ray_match_local(cluster, tmp_path, vit, cli):
    from conftest import lora_adapter, tiny_vit

    repo = Repo.init(tmp_path / "a")
    repo.base_add("vit-v1", vit.base_dir)
    tiny_vit(seed=7).save_pretrained(tmp_path / "v2")
    repo.base_add("vit-v2", tmp_path / "v2")
    for i in range(6):
        lora_adapter(tiny_vit(), tmp_path / f"l{i}", seed=20 + i)
        repo.commit(tmp_path / f"l{i}", f"adapter {i}", branch=f"class/{i}", base="vit-v1")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    other = Repo.open(tmp_path / "b")
    verified_local = json.loads(cli(["-C", str(repo.path), "verify", "--all", "--json"]).out)
    verified_ray = json.loads(cli(["-C", str(other.path), "verify", "--all", "--json", "--executor", "ray"]).out)
    assert len(verified_ray) == 6 and verified_ray == verified_local  # the same checks, figures and verdicts
    assert cli(["-C", str(repo.path), "rebase", "--all", "--onto", "vit-v2", "--method", "naive"]).code == 0
    res = cli(["-C", str(other.path), "rebase", "--all", "--onto", "vit-v2", "--method", "naive", "--executor", "ray"])
    assert res.code == 0, res.err
    for i in range(6):
        assert other.commit_object(f"class/{i}").tree == repo.commit_object(f"class/{i}").tree
        assert other.commit_object(f"class/{i}").base == repo.store.read_commit(repo.bases()["vit-v2"]).tree
    assert other.fsck().ok


def test_without_ray_the_option_is_one_clear_error(tmp_path, cli, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=2)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    res = cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "--executor", "ray"])
    assert res.code == 3 and "dithub[ray]" in res.err
    assert cli(["-C", str(repo.path), "merge", "task/0", "task/1", "--method", "ties", "--executor", "spark"]).code == 3


def test_the_local_path_imports_no_ray(tmp_path):
    import subprocess
    import sys

    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=2)
    code = ("import sys; from dithub import Repo; r = Repo.open(sys.argv[1]); r.merge(['task/0', 'task/1'], 'ties', into='m'); "
            "r.verify_many(['m']); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(repo.path)], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_an_exact_revert_replays_on_ray_as_locally(cluster, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=4)
    repo.merge([f"task/{i}" for i in range(4)], "dare", {"combine": "ties"}, into="server")
    local = cli(["-C", str(repo.path), "revert", "task/2", "--from", "server", "--into", "server"])
    assert local.code == 0, local.err
    remote = cli(["-C", str(repo.path), "revert", "task/2", "--from", "server~1", "--into", "other", "--executor", "ray"])
    assert remote.code == 0, remote.err
    assert repo.commit_object("other").tree == repo.commit_object("server").tree


def test_fsck_on_ray_finds_what_fsck_finds(cluster, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=3)
    victim = repo.tree_of("task/1").tensors["layers.2.w"].id
    path = repo.path / ".dithub" / "objects" / victim[:2] / victim[2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    local = json.loads(cli(["-C", str(repo.path), "fsck", "--json"]).out)
    remote = json.loads(cli(["-C", str(repo.path), "fsck", "--json", "--executor", "ray"]).out)
    assert remote == local and [c[0] for c in local["corrupt"]] == [victim]


def test_a_merge_against_the_s3_remote_is_the_local_one(cluster, tmp_path, cli, s3_server):
    """The remote is the store of record: tasks read the inputs from S3 (moto) and write the merged
    tensors there; the remote branch moves after every task succeeded; then it is fetched."""
    import uuid

    from dithub.ops.sync import push, remote_add

    repo = Repo.init(tmp_path / "repo")
    commit_task_vectors(repo, tmp_path, make_tv, n=8)
    revs = [f"task/{i}" for i in range(8)]
    remote_add(repo, "origin", f"s3://adapters/{uuid.uuid4().hex}", s3_server)
    push(repo, "origin", revs)
    local = repo.merge(revs, "ties", {"density": 0.3}, into="local")
    res = cli(["-C", str(repo.path), "merge", *revs, "--method", "ties", "-p", "density=0.3", "--into", "merged",
               "--remote", "origin", "--executor", "ray"])
    assert res.code == 0, res.err
    fetched = repo.resolve("origin/merged")
    assert repo.store.read_commit(fetched).tree == repo.commit_object(local).tree  # bit for bit, merged on S3
    assert repo.fsck().ok  # the commit came with every object it names
    from dithub.ops.sync import location

    on_s3 = location(repo, "origin").object_ids()
    assert {fetched, repo.store.read_commit(fetched).tree} | {e.id for e in repo.tree_of("origin/merged").tensors.values()} <= on_s3
    bad = cli(["-C", str(repo.path), "merge", "task/0", "nowhere", "--method", "ties", "--into", "x", "--remote", "origin"])
    assert bad.code == 6 and "origin/x" not in {r for r in repo.refs.names("refs/remotes/")}


def test_lora_space_merges_on_ray_are_the_local_ones(cluster, tmp_path, adapters, cli):
    repo = Repo.init(tmp_path / "repo")
    repo.commit(adapters / "a", "a", branch="a")
    repo.commit(adapters / "b", "b", branch="b")
    for method, params in (("mean_ba", []), ("concat", ["-p", "rank=3"]), ("core_space", ["-p", "rule=ties"])):
        assert cli(["-C", str(repo.path), "merge", "a", "b", "--method", method, *params, "--into", f"l/{method}"]).code == 0
        res = cli(["-C", str(repo.path), "merge", "a", "b", "--method", method, *params, "--into", f"r/{method}", "--executor", "ray"])
        assert res.code == 0, res.err
        local, remote = repo.commit_object(f"l/{method}"), repo.commit_object(f"r/{method}")
        assert remote.tree == local.tree and remote.op.params == local.op.params, method  # rank_error included
