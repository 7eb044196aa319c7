"""Remote throughput: push and clone against a local path and a local S3 server (moto), versus
copying the same object files with fsspec directly (the bound); and a history of many small
commits: requests and wall time.

    python benchmarks/remote.py [--gb 1.0] [--commits 2000] [--out benchmarks/results/remote.json]

The large repository is one adapter of --gb GB (64 MB fp32 tensors); the small one a branch of
--commits commits of one 1 KB tensor each. Requests are counted at the fsspec filesystem (every
call that reaches the storage: reads, writes, listings, deletes).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

COUNTED = ("cat_file", "pipe_file", "find", "exists", "rm_file", "mv", "open", "info", "cat", "makedirs", "put_file", "get_file")


def moto_server() -> tuple[object, dict]:
    import boto3
    from moto.server import ThreadedMotoServer

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="bench")
    return server, {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


class Counter:
    """Counts the storage calls of every fsspec filesystem a Location opens (outermost calls
    only: fsspec methods calling each other count once)."""

    def __init__(self) -> None:
        import threading

        self.calls = 0
        self.local = threading.local()

    def install(self) -> None:
        import dithub.remote.location as location

        real = location.Location.__init__
        counter = self

        def init(loc, *a, **k):  # type: ignore[no-untyped-def]
            real(loc, *a, **k)
            for name in COUNTED:
                method = getattr(loc.fs, name, None)
                if method is not None:
                    def wrapped(*args, _m=method, **kwargs):  # type: ignore[no-untyped-def]
                        depth = getattr(counter.local, "depth", 0)
                        counter.calls += depth == 0
                        counter.local.depth = depth + 1
                        try:
                            return _m(*args, **kwargs)
                        finally:
                            counter.local.depth = depth
                    setattr(loc.fs, name, wrapped)

        location.Location.__init__ = init  # type: ignore[method-assign]


def big_repo(root: Path, gb: float):
    import torch
    from safetensors.torch import save_file

    from dithub import Repo

    repo = Repo.init(root / "big")
    n = max(1, round(gb * 1024 / 64))
    g = torch.Generator().manual_seed(0)
    save_file({f"layer{i}.weight": torch.randn(4096, 4096, generator=g) for i in range(n)}, str(root / "big.safetensors"))
    repo.commit(root / "big.safetensors", "one large adapter", branch="main")
    (root / "big.safetensors").unlink()
    return repo


def small_repo(root: Path, commits: int):
    import torch

    from dithub import Repo
    from dithub.merging import put_tensor
    from dithub.store import Tree

    repo = Repo.init(root / "small")
    for i in range(commits):
        entry = put_tensor(repo, torch.full((256,), float(i)))
        tree = repo.store.write_tree(Tree("task_vector", {}, {"w": entry}))
        repo.commit_tree(tree, f"step {i}", branch="main")
    return repo


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--backends", default="path,s3", help="comma-separated: path, s3")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "remote.json")
    args = ap.parse_args()
    import fsspec
    from rich.console import Console
    from rich.table import Table

    from dithub.remote import clone, push, remote_add

    console = Console()
    work = Path(tempfile.mkdtemp(prefix="dithub-remote-bench-"))
    server, s3 = moto_server()
    counter = Counter()
    counter.install()
    with console.status("making the repositories"):
        big = big_repo(work, args.gb)
        small = small_repo(work, args.commits)
    objects_dir = big.path / ".dithub" / "objects"
    nbytes = sum(p.stat().st_size for p in objects_dir.rglob("*") if p.is_file())
    rows = []
    backends = [b for b in (("path", lambda n: str(work / f"remote-{n}"), {}), ("s3 (moto)", lambda n: f"s3://bench/{n}", s3))
                if b[0].split()[0] in args.backends.split(",")]
    for backend, url_of, options in backends:
        fs, root = fsspec.core.url_to_fs(url_of("bound"), **options)
        with console.status(f"{backend}: the bound (fsspec copies the object files)"):
            _, bound_up = timed(lambda: fs.put(str(objects_dir), f"{root}/objects", recursive=True))
            _, bound_down = timed(lambda: fs.get(f"{root}/objects", str(work / f"bound-down-{backend[:2]}"), recursive=True))
        remote_add(big, backend[:2], url_of("big"), options)
        with console.status(f"{backend}: push and clone of {nbytes / 1e9:.2f} GB"):
            counter.calls = 0
            _, up = timed(lambda: push(big, backend[:2], ["main"]))
            up_calls = counter.calls
            counter.calls = 0
            _, down = timed(lambda: clone(url_of("big"), work / f"clone-{backend[:2]}", options=options))
            down_calls = counter.calls
        remote_add(small, backend[:2], url_of("small"), options)
        with console.status(f"{backend}: push and clone of {args.commits} small commits"):
            counter.calls = 0
            _, small_up = timed(lambda: push(small, backend[:2], ["main"]))
            small_up_calls = counter.calls
            counter.calls = 0
            _, small_down = timed(lambda: clone(url_of("small"), work / f"small-clone-{backend[:2]}", options=options))
            small_down_calls = counter.calls
        rows.append({"backend": backend, "bytes": nbytes, "bound_push_s": bound_up, "push_s": up, "push_requests": up_calls,
                     "bound_clone_s": bound_down, "clone_s": down, "clone_requests": down_calls,
                     "push_ratio": up / bound_up, "clone_ratio": down / bound_down,
                     "small_commits": args.commits, "small_objects": 3 * args.commits, "small_push_s": small_up,
                     "small_push_requests": small_up_calls, "small_clone_s": small_down, "small_clone_requests": small_down_calls})
    server.stop()  # type: ignore[attr-defined]
    table = Table(title=f"remotes: {nbytes / 1e9:.2f} GB adapter; {args.commits} small commits (2 cores)")
    for c in ("backend", "push s (bound)", "x bound", "clone s (bound)", "x bound", "small push s / requests", "small clone s / requests"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["backend"], f"{r['push_s']:.2f} ({r['bound_push_s']:.2f})", f"{r['push_ratio']:.2f}",
                      f"{r['clone_s']:.2f} ({r['bound_clone_s']:.2f})", f"{r['clone_ratio']:.2f}",
                      f"{r['small_push_s']:.1f} / {r['small_push_requests']}", f"{r['small_clone_s']:.1f} / {r['small_clone_requests']}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
