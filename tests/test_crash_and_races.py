"""Crash safety (SIGKILL at random points of a commit) and racing writers."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import save_file

from dithub import Repo
from dithub.store.refs import STALE_LOCK_SECONDS

COMMITTER = textwrap.dedent("""
    import random, sys
    from dithub import Repo
    from dithub.errors import RefConflict
    repo = Repo.open(sys.argv[1])
    files = sys.argv[3:]
    rng = random.Random(int(sys.argv[2]))
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        try:
            repo.commit(rng.choice(files), f"c{i}", branch=rng.choice(["main", "class/a", "domain/b"]), allow_empty=True)
        except RefConflict:
            pass  # the lock a killed committer left is still fresh
""")

RACER = textwrap.dedent("""
    import json, os, sys, time
    from dithub import Repo
    from dithub.errors import RefConflict
    repo = Repo.open(sys.argv[1])
    go, n, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    while not os.path.exists(go):
        time.sleep(0.001)
    wins, conflicts, other = [], 0, []
    for i in range(n):
        try:
            wins.append(repo.commit(path, f"{os.getpid()}-{i}", allow_empty=True).id)
        except RefConflict:
            conflicts += 1
        except Exception as exc:
            other.append(repr(exc))
    print(json.dumps({"wins": wins, "conflicts": conflicts, "other": other}))
""")


def _files(tmp_path, n: int, size: int) -> list[str]:
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        path = tmp_path / f"tv{i}.safetensors"
        save_file({f"l{j}.weight": torch.randn(size, size, generator=g) for j in range(6)}, str(path))
        out.append(str(path))
    return out


@pytest.mark.slow
def test_sigkill_during_commit_never_breaks_the_repo(tmp_path):
    repo = Repo.init(tmp_path / "r")
    files = _files(tmp_path, 12, 256)  # ~1.5 MB each
    rng = random.Random(1234)
    kills = 0
    for attempt in range(24):
        child = subprocess.Popen([sys.executable, "-c", COMMITTER, str(repo.path), str(attempt), *files],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += child.returncode == -signal.SIGKILL
        report = Repo.open(repo.path).fsck()
        assert report.ok, (attempt, report)
        for branch in Repo.open(repo.path).branches():
            tree = repo.tree_of(branch)
            assert all(repo.store.read_tensor(e.id).nbytes == e.nbytes for e in tree.tensors.values())
    assert kills >= 20
    assert len(repo.log(["main"])) >= 1
    time.sleep(STALE_LOCK_SECONDS + 0.1)  # a lock left by a killed committer is now stale
    for branch in ("main", "class/a", "domain/b"):
        repo.commit(files[0], "after the crashes", branch=branch, allow_empty=True)
    assert repo.fsck().ok


@pytest.mark.slow
def test_racing_committers_lose_no_update(tmp_path):
    repo = Repo.init(tmp_path / "r")
    path = tmp_path / "small.safetensors"
    save_file({"w": torch.ones(4)}, str(path))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(repo.path), str(go), "25", str(path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)
    go.write_text("")
    results = [json.loads(p.communicate()[0]) for p in procs]
    wins = [w for r in results for w in r["wins"]]
    assert all(not r["other"] for r in results), results
    assert sum(r["conflicts"] for r in results) > 0  # they really raced
    assert len(wins) + sum(r["conflicts"] for r in results) == 100
    log = repo.reflog("main")
    assert sorted(e.new for e in log) == sorted(wins)  # every success is in the reflog
    assert all(prev.new == cur.old for prev, cur in zip(log, log[1:]))  # no update lost
    assert set(e.id for e in repo.log(["main"])) == set(wins)
