"""Past one machine: the same workloads run locally and as Ray tasks (issue 22).

    python benchmarks/scale.py [--work DIR] [--json benchmarks/results/scale.json]

Workloads, on one repository: TIES of 8 task vectors (16 tensors of 1024x1024 fp32 each: 64 MB per
input, 512 MB read), verify of 6 LoRA branches, rebase --all of the same 6 branches (naive). Each
runs with ``--executor local`` and on a local Ray cluster of 1 and of 2 worker CPUs (the cluster
started before the timing). Ray's own cost per task is measured with empty tasks. On a 2-core machine
the win is small or negative: the point is the per-task and per-byte costs that docs/scaling.md
extrapolates from.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import _setup  # noqa: F401  the repository's packages first on sys.path

HERE = Path(__file__).resolve().parent


def _noop(shared: object, item: int) -> int:
    return item


def build(work: Path) -> Path:
    import torch
    from conftest import lora_adapter, tiny_vit
    from safetensors.torch import save_file

    from dithub import Repo

    shutil.rmtree(work, ignore_errors=True)
    repo = Repo.init(work / "repo")
    for i in range(8):
        g = torch.Generator().manual_seed(i)
        save_file({f"layers.{j}.w": torch.randn(1024, 1024, generator=g) for j in range(16)}, str(work / f"t{i}.safetensors"))
        repo.commit(work / f"t{i}.safetensors", f"task {i}", branch=f"task/{i}")
    tiny_vit().save_pretrained(work / "v1")
    tiny_vit(seed=7).save_pretrained(work / "v2")
    repo.base_add("vit-v1", work / "v1")
    repo.base_add("vit-v2", work / "v2")
    for i in range(6):
        lora_adapter(tiny_vit(), work / f"l{i}", seed=20 + i)
        repo.commit(work / f"l{i}", f"adapter {i}", branch=f"class/{i}", base="vit-v1")
    return work / "repo"


def run(repo_dir: Path, executor: str, i: int) -> dict[str, float]:
    """Seconds of each workload with ``executor`` (rebase on a copy, so each run starts alike)."""
    from dithub import Repo

    repo = Repo.open(repo_dir)
    out = {}
    t0 = time.perf_counter()
    repo.merge([f"task/{k}" for k in range(8)], "ties", into=f"m/{executor}-{i}", executor=executor)
    out["merge 8 x 64 MB (ties)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    repo.verify_many([f"class/{k}" for k in range(6)], executor=executor)
    out["verify 6 branches"] = time.perf_counter() - t0
    copy = repo_dir.parent / f"copy-{executor.replace('=', '_')}-{i}"
    shutil.copytree(repo_dir, copy)
    t0 = time.perf_counter()
    Repo.open(copy).rebase("vit-v2", method="naive", all_branches=True, executor=executor)
    out["rebase --all 6 branches (naive)"] = time.perf_counter() - t0
    shutil.rmtree(copy)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dithub-bench-scale"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "scale.json")
    args = ap.parse_args()
    import ray

    repo_dir = build(args.work.resolve())
    rows: dict[str, dict[str, float]] = {}
    overhead: dict[str, float] = {}
    for label, cpus in (("local", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
        if cpus is not None:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            from dithub.ops.executor import RayExecutor

            ex = RayExecutor()
            ex.map(_noop, list(range(cpus * 4)))  # workers started and warm before any timing
            t0 = time.perf_counter()
            ex.map(_noop, list(range(200)))
            overhead[label] = (time.perf_counter() - t0) / 200
            run(repo_dir, "ray", -1)  # warm: each worker has imported torch and dithub
        runs = [run(repo_dir, "local" if cpus is None else "ray", i) for i in range(args.repeat)]
        rows[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        if cpus is not None:
            ray.shutdown()
    local = rows["local"]
    print(f"{'workload':<36}" + "".join(f"{label:>18}" for label in rows))
    for k in local:
        print(f"{k:<36}" + "".join(f"{rows[label][k]:>11.2f} s {rows[label][k] / local[k]:>4.2f}x" for label in rows))
    for label, seconds in overhead.items():
        print(f"Ray overhead per empty task ({label}): {1000 * seconds:.2f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cpus": os.cpu_count(),
                                     "repeat": args.repeat, "seconds": rows, "ray_task_overhead_s": overhead,
                                     "merge_bytes_read": 8 * 16 * 1024 * 1024 * 4}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "tests"))
    main()
