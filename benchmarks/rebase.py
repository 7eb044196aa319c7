"""Rebase accuracy on the embedded digits benchmark: adapters trained on vit-v1, moved to vit-v2.

For each rebase method (naive, transfusion, gradfix, theseus) and each adapter — the eight domain
LoRA adapters, the eight domain task vectors, the five class-pair LoRA adapters of
examples/digits — the accuracy of the moved adapter on vit-v2 (its domain's test split), at α = 1
and at the α that `--alpha auto` picks on the probe (64 labelled *training* images of the
adapter's task; gradfix and theseus use the same 64 images), and the time per adapter. The upper
bound is re-fine-tuning on vit-v2 with the recipe that made the adapter; the floor is vit-v2
zero-shot. Writes benchmarks/results/rebase.json and prints a table.

    python benchmarks/rebase.py [--suite DIR] [--out benchmarks/results/rebase.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _setup import HERE, ROOT

METHODS = ("naive", "transfusion", "gradfix", "theseus")
PROBE_SAMPLES = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=ROOT / "examples" / "digits")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rebase.json")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table
    from safetensors.torch import save_file

    from dithub import Repo
    from dithub_demo import CLASS_TASKS, DOMAINS, build_suite, score, task_split, train_full, train_lora
    from dithub_demo.suite import CLASS_RECIPE, RECIPE
    from dithub.errors import IncompatibleAdapters

    console = Console()
    suite = build_suite(args.suite, log=console.print)
    work = Path(tempfile.mkdtemp(prefix="dithub-rebase-"))
    repo = Repo.init(work / "repo")
    repo.base_add("vit-v1", suite.base("vit-v1"))
    repo.base_add("vit-v2", suite.base("vit-v2"))
    adapters = [("lora", d, suite.lora(d), RECIPE) for d in DOMAINS] + [("full", d, suite.task_vector(d), RECIPE) for d in DOMAINS]
    adapters += [("class", t, suite.lora(t), CLASS_RECIPE) for t in CLASS_TASKS]
    rows: list[dict] = []
    for kind, task, path, recipe in adapters:
        split = task_split(task)
        probe = work / "probes" / f"{task.replace('/', '-')}.safetensors"
        probe.parent.mkdir(parents=True, exist_ok=True)
        save_file({"inputs": split.x_train[:PROBE_SAMPLES].contiguous(), "labels": split.y_train[:PROBE_SAMPLES].contiguous()}, str(probe))
        branch = task if kind == "class" else f"{kind}/{task}"
        repo.commit(path, f"{kind} {task}", branch=branch, base="vit-v1")
        own = score(repo, branch, [task])[task]
        row = {"kind": kind, "task": task, "v1_own": own, "methods": {}}
        with console.status(f"{branch}: vit-v2 zero-shot and re-fine-tuning (upper bound)"):
            t0 = time.perf_counter()
            if kind == "full":
                tau, acc = train_full(suite.base("vit-v2"), split, seed=900, epochs=recipe["full_epochs"])
            else:
                acc = train_lora(suite.base("vit-v2"), split, work / "refit" / task, seed=900, rank=recipe["lora_rank"],
                                 epochs=recipe["lora_epochs"])
            row["refit"] = {"accuracy": acc, "seconds": time.perf_counter() - t0}
        for method in METHODS:
            for alpha in ("1.0", "auto"):
                name = f"{branch}@{method}-{alpha}"
                repo.create_branch(name, branch)
                with console.status(f"{name}"):
                    t0 = time.perf_counter()
                    refused: dict = {}
                    try:
                        [result] = repo.rebase("vit-v2", name, method, alpha=alpha, probe=str(probe))
                    except IncompatibleAdapters as exc:  # theseus refuses what its probe leaves undetermined:
                        refused = {"refused": exc.message, "params": {"fit": "joint"}}  # the first release's fit moves it
                        [result] = repo.rebase("vit-v2", name, method, refused["params"], alpha=alpha, probe=str(probe))
                    seconds = time.perf_counter() - t0
                    acc = score(repo, name, [task])[task]
                row["methods"][f"{method} α={alpha}"] = {"accuracy": acc, "seconds": seconds,
                                                        "alpha": result.alphas[result.new_head], **refused}
        row["v2_zero_shot"] = score(repo, f"{branch}@naive-1.0", [task], scale=0.0)[task]  # vit-v2 without the adapter
        rows.append(row)
        console.print(f"{branch}: v1 {own:.3f}, v2 zero-shot {row['v2_zero_shot']:.3f}, refit {row['refit']['accuracy']:.3f}, "
                      + ", ".join(f"{m} {r['accuracy']:.3f}" for m, r in row["methods"].items()))
    columns = [f"{m} α={a}" for m in METHODS for a in ("1.0", "auto")]
    table = Table(title="vit-v1 adapters moved to vit-v2: mean accuracy % (mean seconds per adapter)")
    for c in ("adapters", "on vit-v1", "v2 zero-shot", *columns, "re-fine-tune"):
        table.add_column(c, justify="right")
    summary = {}
    for kind, label in (("lora", "8 domains, LoRA"), ("full", "8 domains, task vectors"), ("class", "5 class pairs, LoRA")):
        group = [r for r in rows if r["kind"] == kind]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        s = {"on vit-v1": mean([r["v1_own"] for r in group]), "v2 zero-shot": mean([r["v2_zero_shot"] for r in group]),
             "re-fine-tune": mean([r["refit"]["accuracy"] for r in group]),
             "re-fine-tune seconds": mean([r["refit"]["seconds"] for r in group])}
        for c in columns:
            s[c] = mean([r["methods"][c]["accuracy"] for r in group])
            s[c + " seconds"] = mean([r["methods"][c]["seconds"] for r in group])
        summary[kind] = s
        table.add_row(label, f"{100 * s['on vit-v1']:.1f}", f"{100 * s['v2 zero-shot']:.1f}",
                      *[f"{100 * s[c]:.1f} ({s[c + ' seconds']:.1f})" for c in columns],
                      f"{100 * s['re-fine-tune']:.1f} ({s['re-fine-tune seconds']:.1f})")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "probe_samples": PROBE_SAMPLES,
                                    "summary": summary, "rows": rows}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
