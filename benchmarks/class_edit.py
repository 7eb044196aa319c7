"""Forgetting one class with Class Vectors (arXiv 2510.11268; ``dithub revert REV --class C``).

For each digit class C and two fine-tunes of the demo's vit-v1 (the noisy-digits and the
rot90-digits task vectors): the class vector is measured on 256 training images of the domain
(``dithub_demo.train_probe``), the final block refitted with the registered defaults, and the
edited model scored on the domain's test split — class C's accuracy (forget) and the other nine
classes' (retain), before and after — with the edit's wall time. Writes
benchmarks/results/class_edit.json and prints a table.

    python benchmarks/class_edit.py [--out benchmarks/results/class_edit.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _setup import HERE, ROOT
sys.path.insert(0, str(ROOT / "examples"))

DOMAINS = ("noisy", "rot90")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "class_edit.json")
    args = ap.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    from dithub import Repo
    from dithub_demo import build_suite, domain_split, train_probe
    from dithub_demo.scoreboard import _model

    console = Console()
    suite = build_suite(ROOT / "examples" / "digits", log=console.print)
    work = Path(tempfile.mkdtemp(prefix="dithub-class-edit-"))
    repo = Repo.init(work / "repo")
    repo.base_add("vit-v1", suite.base("vit-v1"))

    def accuracy(rev: str, domain: str, cls: int) -> tuple[float, float]:
        split = domain_split(domain)
        with torch.no_grad():
            pred = _model(repo, rev, 1.0)(pixel_values=split.x_test).logits.argmax(-1)
        y = split.y_test
        return float((pred[y == cls] == cls).float().mean()), float((pred[y != cls] == y[y != cls]).float().mean())

    rows = []
    for domain in DOMAINS:
        repo.commit(suite.task_vector(domain), domain, branch=f"tv/{domain}", base="vit-v1")
        probe = train_probe(domain, work / f"{domain}.safetensors")
        for cls in range(10):
            t0 = time.perf_counter()
            repo.revert(f"tv/{domain}", forget_class=cls, probe=str(probe), branch=f"forget/{domain}-{cls}")
            seconds = time.perf_counter() - t0
            before, after = accuracy(f"tv/{domain}", domain, cls), accuracy(f"forget/{domain}-{cls}", domain, cls)
            rows.append({"domain": domain, "class": cls, "forget_before": before[0], "forget_after": after[0],
                         "retain_before": before[1], "retain_after": after[1], "seconds": seconds})
    table = Table(title="revert --class C: class C's accuracy / the other classes' (test split, %)")
    for col in ("fine-tune", "class", "before", "after", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["domain"], str(r["class"]), f"{100 * r['forget_before']:.0f} / {100 * r['retain_before']:.1f}",
                      f"{100 * r['forget_after']:.0f} / {100 * r['retain_after']:.1f}", f"{r['seconds']:.1f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "probe": "256 training images of the domain",
                                    "params": dict(repo.store.read_commit(repo.resolve("forget/noisy-0")).op.params),
                                    "rows": rows}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
