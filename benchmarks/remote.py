"""Remote throughput: push and clone against a local path and a local S3 server (moto), versus
copying the same object files with fsspec directly (the bound); and a history of many small
commits: requests and wall time.

    python benchmarks/remote.py [--gb 1.0] [--commits 2000] [--repeat 3] [--out benchmarks/results/remote.json]

The large repository is one adapter of --gb GB (64 MB fp32 tensors); the small one a branch of
--commits commits of one 1 KB tensor each. Requests are the storage calls dithub makes (reads,
writes, listings, deletes), as push and clone report them. A clone stores every object durably
(fsync), a plain fsspec copy does not: the durable bound adds an fsync of every copied file.
Each large-repository figure is the median of --repeat runs (a fresh remote and clone each time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _setup import HERE


def fsync_tree(root: Path) -> None:
    """Make every file under ``root`` (and the folders naming them) durable."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def big_repo(root: Path, gb: float, hash: str = "blake3"):
    import torch
    from safetensors.torch import save_file

    from dithub import Repo

    repo = Repo.init(root / f"big-{hash}", hash=hash)
    n = max(1, round(gb * 1024 / 64))
    g = torch.Generator().manual_seed(0)
    save_file({f"layer{i}.weight": torch.randn(4096, 4096, generator=g) for i in range(n)}, str(root / "big.safetensors"))
    repo.commit(root / "big.safetensors", "one large adapter", branch="main")
    (root / "big.safetensors").unlink()
    return repo


def small_repo(root: Path, commits: int, hash: str = "blake3"):
    import torch

    from dithub import Repo
    from dithub.ops.deltas import put_tensor
    from dithub.store import Tree

    repo = Repo.init(root / f"small-{hash}", hash=hash)
    for i in range(commits):
        entry = put_tensor(repo, torch.full((256,), float(i)))
        tree = repo.store.write_tree(Tree("task_vector", {}, {"w": entry}))
        repo.commit_tree(tree, f"step {i}", branch="main")
    return repo


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_runs(repeat: int, run):  # type: ignore[no-untyped-def]
    """Run ``run(i)`` (returning a dict of figures) ``repeat`` times; the median of each figure."""
    runs = [run(i) for i in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


if TYPE_CHECKING:
    from rich.console import Console


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default="path,s3", help="comma-separated: path, s3")
    ap.add_argument("--hashes", default="blake3,xxh3", help="object hashes of the repositories (comma-separated; issue 26)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "remote.json")
    args = ap.parse_args()
    from rich.console import Console

    console = Console()
    work = Path(tempfile.mkdtemp(prefix="dithub-remote-bench-"))
    try:
        rows = run_rows(args, work, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ~7 GB of repositories and copies per run
    report(args, rows, console)


def run_rows(args: argparse.Namespace, work: Path, console: Console) -> list[dict]:
    """Push and clone the large and the small repository on each backend; one row per backend."""

    from helpers.s3 import s3_server

    server, s3 = s3_server("bench", "k", "s")
    rows = []
    for hash in args.hashes.split(","):
        with console.status(f"making the repositories ({hash})"):
            big = big_repo(work, args.gb, hash)
            small = small_repo(work, args.commits, hash)
        rows += _rows(args, work, console, big, small, s3, hash)
        shutil.rmtree(big.path, ignore_errors=True)
        shutil.rmtree(small.path, ignore_errors=True)
    server.stop()  # type: ignore[attr-defined]
    return rows


def _rows(args: argparse.Namespace, work: Path, console: Console, big, small, s3: dict, hash: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The rows of one hash's repositories: one per backend."""
    import fsspec

    from dithub import Repo
    from dithub.ops.sync import push, remote_add

    objects_dir = big.path / ".dithub" / "objects"
    nbytes = sum(p.stat().st_size for p in objects_dir.rglob("*") if p.is_file())
    rows = []
    backends = [b for b in (("path", lambda n: str(work / f"remote-{hash}-{n}"), {}),
                            ("s3 (moto)", lambda n: f"s3://bench/{hash}-{n}", s3))
                if b[0].split()[0] in args.backends.split(",")]
    for backend, url_of, options in backends:
        tag = backend[:2]

        def large(i: int) -> dict[str, float]:
            fs, root = fsspec.core.url_to_fs(url_of(f"bound{i}"), **options)
            down = work / f"bound-down-{hash}-{tag}{i}"
            _, bound_up = timed(lambda: fs.put(str(objects_dir), f"{root}/objects", recursive=True))
            _, bound_down = timed(lambda: fs.get(f"{root}/objects", str(down), recursive=True))
            _, sync = timed(lambda: fsync_tree(down))
            remote_add(big, f"{tag}{i}", url_of(f"big{i}"), options)
            pushed, up = timed(lambda: push(big, f"{tag}{i}", ["main"]))
            (_, cloned), clone_s = timed(lambda: Repo.clone(url_of(f"big{i}"), work / f"clone-{hash}-{tag}{i}", options=options))
            fs.rm(f"{root}", recursive=True)
            for folder in (down, work / f"clone-{hash}-{tag}{i}") + ((Path(url_of(f"big{i}")),) if tag == "pa" else ()):
                shutil.rmtree(folder, ignore_errors=True)
            return {"bound_push_s": bound_up, "push_s": up, "push_requests": pushed.requests, "bound_clone_s": bound_down,
                    "durable_bound_clone_s": bound_down + sync, "clone_s": clone_s, "clone_requests": cloned.requests}

        with console.status(f"{backend}: push and clone of {nbytes / 1e9:.2f} GB, {args.repeat} times"):
            row = median_runs(args.repeat, large)
        remote_add(small, tag, url_of("small"), options)
        with console.status(f"{backend}: push and clone of {args.commits} small commits"):
            small_pushed, small_up = timed(lambda: push(small, tag, ["main"]))
            (_, small_cloned), small_down = timed(lambda: Repo.clone(url_of("small"), work / f"small-clone-{hash}-{tag}", options=options))
        rows.append({"backend": f"{backend}, {hash}", "hash": hash, "bytes": nbytes, "repeat": args.repeat, **row,
                     "push_ratio": row["push_s"] / row["bound_push_s"], "clone_ratio": row["clone_s"] / row["bound_clone_s"],
                     "clone_ratio_durable": row["clone_s"] / row["durable_bound_clone_s"],
                     "small_commits": args.commits, "small_objects": small_pushed.objects, "small_push_s": small_up,
                     "small_push_requests": small_pushed.requests, "small_clone_s": small_down,
                     "small_clone_requests": small_cloned.requests})
    return rows


def report(args: argparse.Namespace, rows: list[dict], console: Console) -> None:
    """Print the table and write the JSON."""
    from rich.table import Table

    nbytes = rows[0]["bytes"] if rows else 0
    table = Table(title=f"remotes: {nbytes / 1e9:.2f} GB adapter (median of {args.repeat}); {args.commits} small commits (2 cores)")
    for c in ("backend", "push s (bound)", "x bound", "clone s (bound / durable)", "x bound", "x durable",
              "small push s / requests", "small clone s / requests"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["backend"], f"{r['push_s']:.2f} ({r['bound_push_s']:.2f})", f"{r['push_ratio']:.2f}",
                      f"{r['clone_s']:.2f} ({r['bound_clone_s']:.2f} / {r['durable_bound_clone_s']:.2f})",
                      f"{r['clone_ratio']:.2f}", f"{r['clone_ratio_durable']:.2f}",
                      f"{r['small_push_s']:.1f} / {r['small_push_requests']}", f"{r['small_clone_s']:.1f} / {r['small_clone_requests']}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
