"""Accuracy of every registered merge method on the embedded benchmarks (digits; MiniLM text).

For each method (defaults as registered): the mean absolute accuracy over the eight domains and the
normalized accuracy (per domain, merged / that domain's own adapter, averaged), on full fine-tune
task vectors and on rank-8 LoRA adapters; LoRA-native methods on LoRA only. Also the
class-incremental split (noisy digits, one rank-8 LoRA per pair of classes, shared 10-way head,
scored on each pair's test images), and LoRA adapters of the real MiniLM on three text tasks
(examples/minilm). Sequential merging (OPCM) in three task orders. Activation merges (RegMean,
CoM) run on 256 training examples per task (``dithub_demo.train_probe``), never the test split. The suites are the shipped
examples/digits and examples/minilm (--suite DIR / --text DIR build others). Writes
docs/accuracy.json and, with matplotlib, docs/accuracy.png; prints a table.

    python benchmarks/accuracy.py [--suite DIR] [--text DIR] [--out docs]
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from _setup import ROOT

KINDS = {"full": "8 domains, task vectors", "lora": "8 domains, LoRA r8", "class": "5 class pairs, LoRA r8",
         "text": "MiniLM, 3 text tasks, LoRA r8"}
SKIPPED = {"ema": "blends two versions of one class module (old, new); not a merge of eight tasks"}


def orders(domains: list[str]) -> dict[str, list[str]]:
    shuffled = list(domains)
    random.Random(0).shuffle(shuffled)
    return {"benchmark order": list(domains), "reversed": list(reversed(domains)), "shuffled (seed 0)": shuffled}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=ROOT / "examples" / "digits")
    ap.add_argument("--text", type=Path, default=ROOT / "examples" / "minilm", help="the MiniLM text adapters")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from dithub import Repo
    from dithub_demo import (CLASS_TASKS, DOMAINS, TEXT_TASKS, Row, build_suite, build_text_suite, minilm_dir, score,
                             score_text, train_probe)
    from dithub.algorithms.merge import REGISTRY

    console = Console()
    suite = build_suite(args.suite, log=console.print)
    domains = list(DOMAINS)
    repo = Repo.init(Path(tempfile.mkdtemp(prefix="dithub-accuracy-")))
    repo.base_add("vit-v1", suite.base("vit-v1"))
    for d in domains:
        repo.commit(suite.lora(d), d, branch=f"lora/{d}", base="vit-v1")
        repo.commit(suite.task_vector(d), d, branch=f"tv/{d}", base="vit-v1")
    for t in CLASS_TASKS:
        repo.commit(suite.lora(t), t, branch=t, base="vit-v1")
    text_ref = build_text_suite(args.text, log=console.print)["lora"]
    repo.base_add("minilm", minilm_dir())
    for t in TEXT_TASKS:
        repo.commit(args.text / t, t, branch=f"text/{t}", base="minilm")
    results: list[dict] = []

    def scorer(kind: str):
        return score_text if kind == "text" else score

    def record(kind: str, method: str, rev: str, seconds: float, reference: dict[str, float], note: str = "") -> None:
        row = Row(method, scorer(kind)(repo, rev, list(reference)))
        results.append({"kind": kind, "method": method, "note": note, "per_domain": row.accuracy,
                        "mean": row.mean(), "normalized": row.normalized(reference), "merge_seconds": seconds})

    lora_ref = {d: suite.accuracy["lora"][d] for d in domains}
    class_ref = {t: suite.accuracy["lora"][t] for t in CLASS_TASKS}
    kinds = {"full": ([f"tv/{d}" for d in domains], suite.accuracy["full"]),
             "lora": ([f"lora/{d}" for d in domains], lora_ref), "class": (list(CLASS_TASKS), class_ref),
             "text": ([f"text/{t}" for t in TEXT_TASKS], text_ref)}
    data = Path(tempfile.mkdtemp(prefix="dithub-accuracy-probes-"))

    def probes(inputs: list[str]) -> list[str]:
        """Each input's training probe (activation merges; never the test split that scores them)."""
        tasks = [i.split("/", 1)[1] if i.startswith(("tv/", "lora/", "text/")) else i for i in inputs]
        return [str(train_probe(t, data / f"{t}.safetensors")) for t in tasks]

    for kind, (inputs, ref) in kinds.items():
        zero = Row("zero-shot", scorer(kind)(repo, inputs[0], list(ref), scale=0.0))
        results.append({"kind": kind, "method": "individual", "note": "each adapter on its own task",
                        "per_domain": ref, "mean": sum(ref.values()) / len(ref), "normalized": 1.0, "merge_seconds": 0})
        results.append({"kind": kind, "method": "zero-shot", "note": "the base without adapters", "per_domain": zero.accuracy,
                        "mean": zero.mean(), "normalized": zero.normalized(ref), "merge_seconds": 0})
        for name, m in sorted(REGISTRY.items()):
            if name in SKIPPED or m.sequential or (kind == "full" and m.space == "lora"):  # OPCM: in three orders below
                continue
            with console.status(f"{kind}: {name}"):
                t0 = time.perf_counter()
                repo.merge(inputs, name, into=f"merged/{kind}-{name}", probes=probes(inputs) if m.space == "activation" else ())
                record(kind, name, f"merged/{kind}-{name}", time.perf_counter() - t0, ref)
        for label, order in orders(inputs).items():
            with console.status(f"{kind}: opcm, {label}"):
                t0 = time.perf_counter()
                branch = f"merged/{kind}-opcm-{label.split()[0]}"
                repo.merge(order, "opcm", into=branch)
                record(kind, "opcm", branch, time.perf_counter() - t0, ref, note=label)
    table = Table(title="mean accuracy % (normalized %) per method")
    table.add_column("method")
    for kind in KINDS.values():
        table.add_column(kind, justify="right")
    keys = []
    for r in results:
        key = (r["method"], r["note"] if r["method"] == "opcm" else "")
        if key not in keys:
            keys.append(key)
    for method, note in keys:
        cells = []
        for kind in KINDS:
            r = next((x for x in results if x["kind"] == kind and x["method"] == method
                      and (method != "opcm" or x["note"] == note)), None)
            cells.append(f"{100 * r['mean']:.1f} ({100 * r['normalized']:.1f})" if r else "—")
        table.add_row(method + (f" ({note})" if note else ""), *cells)
    console.print(table)
    console.print("not run: " + "; ".join(f"{k}: {v}" for k, v in SKIPPED.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "suite": str(args.suite), "domains": domains, "class_tasks": list(CLASS_TASKS),
        "kinds": KINDS, "recipe": json.loads((suite.root / "suite.json").read_text())["recipe"],
        "class_recipe": json.loads((suite.root / "classes.json").read_text())["recipe"], "text_tasks": list(TEXT_TASKS),
        "text_recipe": json.loads((args.text / "text.json").read_text())["recipe"], "results": results}, indent=1))
    console.print(f"wrote {args.out / 'accuracy.json'}")
    try:
        chart(results, args.out / "accuracy.png")
        console.print(f"wrote {args.out / 'accuracy.png'}")
    except ImportError:
        console.print("matplotlib is not installed (pip install 'dithub[bench]'): no chart")


def chart(results: list[dict], path: Path) -> None:
    """Grouped bars: normalized accuracy per method, one bar per kind of input side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    for r in results:
        label = r["method"] + (f"\n{r['note'].split()[0]}" if r["method"] == "opcm" else "")
        if label not in labels:
            labels.append(label)
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(labels)), 4.6))
    width = 0.8 / len(KINDS)
    for i, (kind, color) in enumerate(zip(KINDS, ("#4c72b0", "#dd8452", "#55a868", "#c44e52"))):
        values = []
        for label in labels:
            method, _, note = label.partition("\n")
            r = next((x for x in results if x["kind"] == kind and x["method"] == method
                      and (not note or x["note"].startswith(note))), None)
            values.append(100 * r["normalized"] if r else 0)
        ax.bar([j + (i - (len(KINDS) - 1) / 2) * width for j in range(len(labels))], values, width, color=color,
               label=KINDS[kind])
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("normalized accuracy %")
    ax.set_title("Merging adapters: tiny ViT on digits (eight domains; five class pairs); MiniLM on three text tasks")
    ax.axhline(100, color="grey", lw=0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(KINDS), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
