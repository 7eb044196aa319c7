"""Merge kernels on a device: effective bandwidth against a copy, and an end-to-end merge from disk.

1. Kernels: N = 8 bf16 inputs of M entries stacked on the device; each kernel reads N·M·2 bytes and
   writes M·4 (fp32). Effective bandwidth = those bytes / time, against a device-to-device copy of
   the same number of bytes (read + written) in the same run: the bound. On CUDA the kernels are
   dithub's Triton kernels (TIES timed with its thresholds given, and with them found on the
   device); on the CPU they are the registered methods (dithub's C kernels).
2. End to end: N task vectors of a Llama-7B-shaped state dict (hidden 4096, MLP 11008, vocabulary
   32,000; ``--layers`` of the 32, default 4, so that 8 inputs fit a 64 GB disk), bf16, committed
   to a repository; ``Repo``'s merge streams them from the object store through the device and
   stores the result. Wall time, and each stage's working seconds (load = read + stage on the
   device, compute = statistics + kernel, store = copy back + hash + write), which overlap.
   Peer: peft's merge_utils (what ``add_weighted_adapter`` runs) on the same device, reading the
   same safetensors files tensor by tensor and writing one output file. mergekit when ``--mergekit``
   names an interpreter that has it.

Prints tables and writes JSON (benchmarks/results/gpu-<device>.json).
"""
from __future__ import annotations

import _setup  # noqa: F401  (sys.path, offline hubs)

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console
from merge import layout  # the Llama-shaped state dict of the merge benchmark, at 7B widths here
from rich.table import Table

HERE = Path(__file__).resolve().parent
console = Console()
KERNELS = ("task_arithmetic", "ties", "dare", "magmax")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _best(fn, dev: torch.device, repeat: int) -> float:
    fn()  # warm-up (compiles)
    _sync(dev)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return min(times)


def kernel_rows(dev: torch.device, n: int, m: int, repeat: int) -> list[dict]:
    from dithub.kernels.device import triton_kernels
    from dithub.algorithms.merge import get_method
    from dithub.algorithms.merge.primitives import dare_limit, magnitude_threshold, tensor_seed

    g = torch.Generator().manual_seed(0)
    stacked = (torch.randn(n, m, generator=g) * 1e-3).to(torch.bfloat16).to(dev)
    moved = n * m * 2 + m * 4
    src = torch.empty(moved // 2, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_s = _best(lambda: dst.copy_(src), dev, repeat)
    copy_bw = 2 * src.numel() / copy_s  # bytes read + written
    rows = [{"kernel": "copy (bound)", "s": copy_s, "GB/s": copy_bw / 1e9, "of copy": 1.0}]
    tk = triton_kernels(dev)
    if tk is not None:
        thr = torch.stack([magnitude_threshold(r, 0.2) for r in stacked.float().unbind(0)]).to(dev)
        limit, keep_prob = dare_limit(0.9, "uint16")
        runs = {
            "task_arithmetic": lambda: tk.task_arithmetic(stacked, torch.full((n,), 0.3, device=dev)),
            "ties (thresholds given)": lambda: tk.ties(stacked, thr, 1.0),
            "ties (with thresholds)": lambda: tk.ties(
                stacked, torch.stack([magnitude_threshold(r, 0.2) for r in stacked.unbind(0)]), 1.0),
            "dare (philox in kernel)": lambda: tk.dare(stacked, seed=tensor_seed(0, "w", 0), offset=0, limit=limit,
                                                       keep_prob=keep_prob, lam=1.0, combine="ta"),
            "magmax": lambda: tk.magmax(stacked, 1.0),
        }
    else:
        rows_ = list(stacked.unbind(0))
        runs = {name: (lambda name=name: get_method(name)(rows_, key="w")) for name in KERNELS}
    for name, fn in runs.items():
        s = _best(fn, dev, repeat)
        rows.append({"kernel": name, "s": s, "GB/s": moved / s / 1e9, "of copy": moved / s / copy_bw})
    return rows


SHAPE = {"hidden": 4096, "mlp": 11008, "vocab": 32000}
"""Llama-7B's widths; ``--layers`` of its 32 transformer layers."""


def make_repo(work: Path, n: int, layers: int):
    """N bf16 task vectors on branches tv0…, made once per (n, layers)."""
    from safetensors.torch import save_file

    from dithub import Repo

    stamp = work / "inputs.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"n": n, "layers": layers}:
        return Repo.open(work / "repo")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    repo = Repo.init(work / "repo")
    g = torch.Generator().manual_seed(1)
    for t in range(n):
        tau = {k: (torch.randn(s, generator=g) * 1e-3).to(torch.bfloat16) for k, s in layout({**SHAPE, "layers": layers}).items()}
        path = work / f"tau{t}.safetensors"
        save_file(tau, str(path))
        del tau
        repo.commit(path, f"task vector {t}", branch=f"tv{t}")
    stamp.write_text(json.dumps({"n": n, "layers": layers}))
    return repo


def end_to_end(work: Path, dev: torch.device, n: int, layers: int, methods: list[str]) -> list[dict]:
    from dithub.ops.merge.plan import plan_merge
    from dithub.ops.merge.run import run_merge

    repo = make_repo(work, n, layers)
    inputs = [repo.resolve(f"tv{t}") for t in range(n)]
    rows = []
    for method in methods:
        plan = plan_merge(repo, inputs, method, {})
        busy: dict[str, float] = {}
        t0 = time.perf_counter()
        run_merge(repo, plan, device=dev.type, busy=busy)
        wall = time.perf_counter() - t0
        peer = peft_merge(work, dev, n, method)
        rows.append({"method": method, "wall_s": wall, **{f"{k}_s": v for k, v in busy.items()},
                     "peft_s": peer, "vs peft": peer / wall if peer else None})
    return rows


def peft_merge(work: Path, dev: torch.device, n: int, method: str) -> float | None:
    """peft.utils.merge_utils on ``dev``, tensor by tensor from the same files, one output file."""
    from peft.utils import merge_utils
    from safetensors import safe_open
    from safetensors.torch import save_file

    fns = {"task_arithmetic": lambda ts, w: merge_utils.task_arithmetic(ts, w),
           "ties": lambda ts, w: merge_utils.ties(ts, w, density=0.2),
           "dare": lambda ts, w: merge_utils.dare_linear(ts, w, density=0.1)}
    if method not in fns:
        return None
    files = [safe_open(str(work / f"tau{t}.safetensors"), "pt") for t in range(n)]
    t0 = time.perf_counter()
    out = {}
    weights = torch.ones(n, device=dev)
    for key in files[0].keys():
        tensors = [f.get_tensor(key).to(dev).float() for f in files]
        out[key] = fns[method](tensors, weights).to(torch.bfloat16).cpu()
    save_file(out, str(work / "peft-out.safetensors"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--entries", type=int, help="entries per input in the kernel table (default 2^26 on CUDA, 2^22 on CPU)")
    ap.add_argument("--layers", type=int, default=4, help="transformer layers of the 7B-shaped state dict (of 32)")
    ap.add_argument("--methods", nargs="+", default=["task_arithmetic", "ties", "dare"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dithub-bench-gpu"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    entries = args.entries or (1 << 26 if dev.type == "cuda" else 1 << 22)
    krows = kernel_rows(dev, args.n, entries, args.repeat)
    table = Table(title=f"merge kernels on {name}: N = {args.n} bf16 inputs of {entries:,} entries")
    for col in ("kernel", "best s", "GB/s", "of copy"):
        table.add_column(col, justify="right")
    for r in krows:
        table.add_row(r["kernel"], f"{r['s']:.4f}", f"{r['GB/s']:.1f}", f"{r['of copy']:.0%}")
    console.print(table)
    erows = [] if args.skip_end_to_end else end_to_end(args.work, dev, args.n, args.layers, args.methods)
    if erows:
        etable = Table(title=f"end to end: {args.n} task vectors, 7B-shaped ({args.layers} layers), bf16, from disk")
        for col in ("method", "wall s", "load s", "compute s", "store s", "peft s", "vs peft"):
            etable.add_column(col, justify="right")
        for r in erows:
            etable.add_row(r["method"], f"{r['wall_s']:.2f}", f"{r.get('load_s', 0):.2f}", f"{r.get('compute_s', 0):.2f}",
                           f"{r.get('store_s', 0):.2f}", f"{r['peft_s']:.2f}" if r["peft_s"] else "-",
                           f"{r['vs peft']:.1f}x" if r["vs peft"] else "-")
        console.print(etable)
    out = HERE / "results" / f"gpu-{dev.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": name, "machine": platform.platform(),
                               "n": args.n, "entries": entries, "layers": args.layers,
                               "kernels": krows, "end_to_end": erows}, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
