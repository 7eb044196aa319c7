"""Commit and checkout throughput and peak memory on a synthetic >= 1 GB adapter.

Measured in one run, on the same file and disk:
  bounds  - a raw fsync'd write of the same bytes (Python, and `dd conv=fsync`),
            and xxh3-128 and BLAKE3-256 hashing of them from the page cache;
  dithub  - first commit, re-commit of unchanged data, re-commit with one
            changed tensor, checkout (each in a fresh process: time, peak RSS),
            in a repository of each object hash (--hashes: blake3, the default
            of new repositories, and xxh3, the legacy format);
  peers   - `git add && git commit` in a plain git repo, and `dvc add`
            (if a `dvc` executable is found: --dvc PATH or on PATH).
Prints a table and writes JSON (default benchmarks/results/commit.json).

    python benchmarks/commit.py [--size-gb 1.0] [--tensors 64] [--dvc PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import xxhash

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from dithub import Repo
    op, repo_dir, path = sys.argv[2], sys.argv[3], sys.argv[4]
    t0 = time.perf_counter()
    if op.startswith("init:"):
        repo = Repo.init(repo_dir, hash=op[5:]); res = None
    elif op == "commit":
        res = Repo.open(repo_dir).commit(path, "bench", allow_empty=True)
        res = {"new_objects": res.new_objects, "new_bytes": res.new_bytes}
    elif op == "checkout":
        Repo.open(repo_dir).export("HEAD", path); res = None
    seconds = time.perf_counter() - t0
    # VmHWM: this process's own peak resident memory (ru_maxrss would carry the parent's over exec)
    hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"seconds": seconds, "maxrss_bytes": hwm, "result": res}))
""")


def child(op: str, repo: Path, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), op, str(repo), str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def make_adapter(path: Path, size: int, n: int) -> list[str]:
    """n float16 tensors, random bytes, ``size`` bytes in all (safetensors)."""
    per = size // n // 2 * 2
    names = [f"base_model.model.layers.{i}.mlp.lora_A.weight" for i in range(n)]
    header = {name: {"dtype": "F16", "shape": [per // 2], "data_offsets": [i * per, (i + 1) * per]}
              for i, name in enumerate(names)}
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for _ in names:
            f.write(os.urandom(per))
    return names


def change_one_tensor(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-4096, os.SEEK_END)
        f.write(os.urandom(4096))


def warm(path: Path) -> None:
    """Source in the page cache, and no writeback of an earlier step still running."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    os.sync()


def raw_write(src: Path, dst: Path) -> float:
    warm(src)
    t0 = time.perf_counter()
    with open(src, "rb") as f, open(dst, "wb") as g:
        while chunk := f.read(64 << 20):
            g.write(chunk)
        g.flush()
        os.fsync(g.fileno())
    seconds = time.perf_counter() - t0
    dst.unlink()
    return seconds


def dd_write(src: Path, dst: Path) -> float | None:
    if not shutil.which("dd"):
        return None
    warm(src)
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=64M", "conv=fsync"], check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    dst.unlink()
    return seconds


def hash_time(path: Path, name: str = "xxh3") -> float:
    """One pass of the hash over the file from the page cache (BLAKE3 on every core, as dithub
    hashes large objects)."""
    import mmap

    import blake3

    warm(path)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        t0 = time.perf_counter()
        if name == "blake3":
            blake3.blake3(mm, max_threads=blake3.blake3.AUTO).hexdigest()
        else:
            xxhash.xxh3_128(mm).hexdigest()
        seconds = time.perf_counter() - t0
        mm.close()
    return seconds


def git_commit(src: Path, work: Path) -> float | None:
    if not shutil.which("git"):
        return None
    repo = work / "gitrepo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    shutil.copyfile(src, repo / src.name)
    warm(repo / src.name)
    t0 = time.perf_counter()
    subprocess.run(["git", "add", src.name], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "adapter"], cwd=repo, check=True, env=env)
    seconds = time.perf_counter() - t0
    shutil.rmtree(repo)
    return seconds


def dvc_add(src: Path, work: Path, dvc: str | None) -> float | None:
    if not dvc:
        return None
    repo = work / "dvcrepo"
    repo.mkdir()
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=repo, check=True)
    shutil.copyfile(src, repo / src.name)
    warm(repo / src.name)
    t0 = time.perf_counter()
    subprocess.run([dvc, "add", "-q", src.name], cwd=repo, check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(repo)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="Best of N runs for each measurement (git: one run).")
    parser.add_argument("--dvc", default=shutil.which("dvc"), help="Path of a dvc executable (peer).")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "commit.json")
    parser.add_argument("--workdir", type=Path, default=None, help="Scratch directory (default: under benchmarks/).")
    parser.add_argument("--hashes", default="blake3,xxh3", help="Object hashes of the repositories measured (comma-separated).")
    args = parser.parse_args()
    size = int(args.size_gb * 1e9)
    (args.workdir or HERE).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-", dir=args.workdir or HERE))
    try:
        report = run(work, size, args.tensors, args.dvc, args.repeat, args.hashes.split(","))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {args.json}")


def run(work: Path, size: int, n: int, dvc: str | None, repeat: int, hashes: list[str]) -> dict:
    src = work / "adapter.safetensors"
    make_adapter(src, size, n)
    nbytes = src.stat().st_size
    gbps = lambda s: nbytes / s / 1e9 if s else None  # noqa: E731
    r: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(), "cpus": os.cpu_count(),
               "bytes": nbytes, "tensors": n, "repeat": repeat, "rows": {}}
    rows = r["rows"]

    def row(name: str, seconds: float | None, **extra) -> None:
        rows[name] = {"seconds": seconds, "gb_per_s": gbps(seconds), **extra}

    best = lambda f: min(f() for _ in range(repeat))  # noqa: E731  best of N: the disk is noisy
    row("bound: raw fsync'd write (python)", best(lambda: raw_write(src, work / "copy")))
    row("bound: raw fsync'd write (dd conv=fsync)", best(lambda: dd_write(src, work / "copy")) if shutil.which("dd") else None)
    row("bound: xxh3-128 hash (page cache)", best(lambda: hash_time(src)))
    row("bound: BLAKE3-256 hash (page cache, every core)", best(lambda: hash_time(src, "blake3")))
    for h in hashes:
        firsts, unchanged, changed, checkouts = [], [], [], []
        for i in range(repeat):
            repo = work / f"repo{i}"
            child(f"init:{h}", repo, src)
            warm(src)
            firsts.append(child("commit", repo, src))
            warm(src)
            unchanged.append(child("commit", repo, src))
            change_one_tensor(src)
            warm(src)
            changed.append(child("commit", repo, src))
            os.sync()
            checkouts.append(child("checkout", repo, work / "out"))
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.rmtree(repo, ignore_errors=True)
        for name, runs in [("dithub commit (first)", firsts), ("dithub re-commit (unchanged)", unchanged),
                           ("dithub re-commit (one tensor changed)", changed), ("dithub checkout", checkouts)]:
            fastest = min(runs, key=lambda c: c["seconds"])
            row(f"{name} [{h}]", fastest["seconds"], peak_rss_bytes=max(c["maxrss_bytes"] for c in runs), **(fastest["result"] or {}))
    row("peer: git add && git commit", git_commit(src, work))
    row("peer: dvc add", best(lambda: dvc_add(src, work, dvc)) if dvc else None)

    raw = max(v for k, v in ((k, rows[k]["gb_per_s"]) for k in rows if k.startswith("bound: raw")) if v)
    peers = {k: rows[k]["seconds"] for k in rows if k.startswith("peer") and rows[k]["seconds"]}
    r["ratios"] = {"peak RSS / adapter size (max over dithub rows)": max(v.get("peak_rss_bytes", 0) for v in rows.values()) / nbytes}
    for h in hashes:
        first = rows[f"dithub commit (first) [{h}]"]
        r["ratios"].update({
            f"first commit / raw write [{h}]": first["gb_per_s"] / raw,
            f"checkout / raw write [{h}]": rows[f"dithub checkout [{h}]"]["gb_per_s"] / raw,
            f"re-commit unchanged GB/s [{h}]": rows[f"dithub re-commit (unchanged) [{h}]"]["gb_per_s"],
            f"re-commit one changed: bytes written / one tensor [{h}]":
                rows[f"dithub re-commit (one tensor changed) [{h}]"]["new_bytes"] / (nbytes / n),
            **{f"speedup of first commit vs {k[6:]} [{h}]": s / first["seconds"] for k, s in peers.items()},
        })
    r["targets"] = {
        "first commit / raw write": ">= 0.75 (issue 26, BLAKE3: >= 1, at least as fast as the raw write)",
        "checkout / raw write": ">= 0.75", "re-commit unchanged GB/s": ">= 5 (issue 26, BLAKE3: >= 3)",
        "speedup vs each peer": ">= 5", "peak RSS": "well under the adapter size",
    }
    return r


def print_table(r: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text without rich
        Console = Table = None
    title = f"commit benchmark: {r['bytes'] / 1e9:.2f} GB in {r['tensors']} tensors, {r['date']}"
    cells = [(k, f"{v['seconds']:.2f}" if v["seconds"] else "n/a", f"{v['gb_per_s']:.2f}" if v["gb_per_s"] else "n/a",
              f"{v['peak_rss_bytes'] / 1e6:.0f}" if v.get("peak_rss_bytes") else "",
              f"{v['new_bytes'] / 1e6:.1f}" if "new_bytes" in v else "") for k, v in r["rows"].items()]
    if Table is None:
        print(title)
        for c in cells:
            print(" | ".join(c))
    else:
        from rich.markup import escape

        t = Table("measurement", "seconds", "GB/s", "peak RSS MB", "MB written", title=title)
        for c in cells:
            t.add_row(*(escape(x) for x in c))  # "[blake3]" is a row name, not markup
        Console().print(t)
    for k, v in r["ratios"].items():
        print(f"{k}: {v:.2f}")


if __name__ == "__main__":
    main()
