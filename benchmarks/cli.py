"""The command line's fixed cost: wall time and peak memory of dithub commands on a small adapter,
against ``git add && git commit`` of the same files in the same run (issue 20, part 5), and the
floors measured in the same run: Python's start-up, and the command line's (a process that imports
dithub's CLI and has typer build its commands, then stops).

    python benchmarks/cli.py [--repeat 5] [--json benchmarks/results/cli.json]

A tiny ViT base is registered once; each run then times, in fresh processes, ``dithub commit`` of a
16 KB LoRA adapter on it, ``--help``, ``log``, ``status`` and ``checkout -o``, and git committing the same
adapter files into a git repository. Prints the median seconds and the peak RSS of each (the
targets: commit ≤ 0.3 s and ≤ 100 MB on a 2-core machine; every command that does not merge
≤ 0.3 s, issue 24) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _setup  # noqa: F401  the repository's packages first on sys.path

HERE = Path(__file__).resolve().parent
MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
           "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


FLOOR = "import typer.main; from dithub.cli.app import app; typer.main.get_command(app)"
"""What every command pays before it does anything: Python, dithub's CLI imported, and typer building
the command tree from the functions' signatures."""


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``cmd`` run alone in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], cwd=cwd, capture_output=True, text=True, check=True).stdout
    rc, seconds, kb = out.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}")
    return float(seconds), float(kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "cli.json")
    args = parser.parse_args()
    from conftest import lora_adapter, tiny_vit

    from dithub import Repo

    work = Path(tempfile.mkdtemp(prefix="dithub-cli-"))
    dithub = str(Path(sys.executable).with_name("dithub"))
    try:
        tiny_vit().save_pretrained(work / "vit")
        lora_adapter(tiny_vit(), work / "lora", seed=1)
        size = sum(p.stat().st_size for p in (work / "lora").iterdir())
        Repo.init(work / "repo").base_add("vit", work / "vit")
        subprocess.run(["git", "init", "-q", str(work / "git")], check=True)
        rows: dict[str, list[tuple[float, float]]] = {}
        for i in range(args.repeat):
            shutil.rmtree(work / "git" / "lora", ignore_errors=True)
            shutil.copytree(work / "lora", work / "git" / "lora")
            (work / "git" / "lora" / "run").write_text(str(i))  # something new to commit each run
            (work / "lora" / "README.md").write_text(f"run {i}\n")
            steps = {
                "dithub commit (small LoRA, on its base)": [dithub, "commit", str(work / "lora"), "-m", f"run {i}", "-b", f"run/{i}", "--base", "vit"],
                "dithub --help": [dithub, "--help"],
                "dithub log": [dithub, "log", f"run/{i}", "-n", "5"],
                "dithub status": [dithub, "status"],
                "dithub checkout -o": [dithub, "checkout", f"run/{i}", "-o", str(work / f"out{i}")],
                "git add && git commit (same files)": ["sh", "-c", f"git add lora && git -c user.name=b -c user.email=b@x commit -qm 'run {i}'"],
                "floor: python start-up": [sys.executable, "-c", "pass"],
                "floor: the CLI built (imports, typer's tree)": [sys.executable, "-c", FLOOR],
            }
            for name, cmd in steps.items():
                rows.setdefault(name, []).append(measure(cmd, work / ("git" if name.startswith("git") else "repo")))
        table = {name: {"seconds": statistics.median(s for s, _ in runs), "peak_mb": max(m for _, m in runs), "runs": runs}
                 for name, runs in rows.items()}
        git = table["git add && git commit (same files)"]["seconds"]
        print(f"adapter: {size / 1024:.0f} KB, {args.repeat} runs, median seconds and peak RSS")
        for name, row in table.items():
            print(f"  {name:<44} {row['seconds']:7.3f} s  {row['peak_mb']:6.0f} MB  ({row['seconds'] / git:.1f}x git)")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"adapter_bytes": size, "repeat": args.repeat, "rows": table}, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
