"""Before/after: commit.py, merge.py and remote.py on two revisions, interleaved, N runs each.

    python benchmarks/ab.py BEFORE [AFTER] [--runs 5] [--out benchmarks/results/ab.json]

Each revision is checked out in a temporary git worktree and imported from there (the benchmark
scripts put their own repository first on sys.path); AFTER defaults to the working tree. Run i
runs every benchmark on both revisions, alternating which goes first, so drifts of the machine
(page cache, other load) fall on both. Sizes are small enough for a few minutes a run: commit.py
--size-gb 0.5, merge.py N = 4 (task arithmetic and TIES through Repo.merge), remote.py 0.5 GB and
500 small commits. Prints, per row, the median (and range) of each side, after / before, and the
runs' own spread (max / min − 1, the larger of the two sides): a slowdown is the ratio above 1,
and it is noise unless it is above that spread.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BENCHES = {
    "commit": ["commit.py", "--size-gb", "0.5", "--repeat", "1", "--json"],
    "merge": ["merge.py", "--n", "4", "--methods", "task_arithmetic", "ties", "--impls", "repo", "--repeat", "1", "--json"],
    "remote": ["remote.py", "--gb", "0.5", "--commits", "500", "--repeat", "1", "--out"],
}


def rows_of(bench: str, doc: dict) -> dict[str, float]:
    """The seconds each benchmark's JSON reports for dithub's own rows."""
    if bench == "commit":
        names = ("dithub commit (first)", "dithub re-commit (unchanged)", "dithub re-commit (one tensor changed)", "dithub checkout")
        return {n: doc["rows"][n]["seconds"] for n in names}
    if bench == "merge":
        return {f"Repo.merge {r['method']} N={r['n']}": r["best"] for r in doc["merge"] if r["impl"] == "repo"}
    return {f"{r['backend']} {k}": r[k] for r in doc["rows"] for k in ("push_s", "clone_s", "small_push_s", "small_clone_s")}


def run_one(tree: Path, bench: str, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / BENCHES[bench][0]), *BENCHES[bench][1:], str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return rows_of(bench, json.loads(out.read_text()))


def summarize(samples: dict[tuple[str, str], dict[str, list[float]]]) -> list[dict]:
    out = []
    for (bench, row), sides in samples.items():
        before, after = sides["before"], sides["after"]
        if not before or not after:
            continue
        spread = max(max(before) / min(before) - 1, max(after) / min(after) - 1)
        out.append({"bench": bench, "row": row, "before": before, "after": after,
                    "ratio": statistics.median(after) / statistics.median(before), "spread": spread})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after", nargs="?", help="a revision (default: the working tree)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ab.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dithub-ab-"))
    trees = {"before": work / "before", "after": work / "after" if args.after else ROOT}
    for side, rev in (("before", args.before), ("after", args.after)):
        if rev:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(trees[side]), rev], check=True,
                           capture_output=True)
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    try:
        for i in range(args.runs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for bench in BENCHES:
                for side in order:
                    for row, seconds in run_one(trees[side], bench, work / f"{side}-{bench}-{i}.json").items():
                        samples.setdefault((bench, row), {"before": [], "after": []})[side].append(seconds)
                    print(f"run {i + 1}/{args.runs} {bench} {side}", flush=True)
    finally:
        for side in ("before", "after"):
            if trees[side] != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[side])], capture_output=True)
    rows = summarize(samples)
    print("| benchmark | row | before: median (min–max) s | after: median (min–max) s | after / before | spread |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['bench']} | {r['row']} | {statistics.median(b):.3f} ({min(b):.3f}–{max(b):.3f}) | "
              f"{statistics.median(a):.3f} ({min(a):.3f}–{max(a):.3f}) | {r['ratio']:.3f} | {r['spread']:.0%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"before": args.before, "after": args.after or "working tree", "runs": args.runs, "rows": rows},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
