"""Backdoors in merges, and the IBVS defence (arXiv 2510.08016), on the digits suite.

A client sends a rot90 adapter with a backdoor (a trigger in the bottom-right corner makes any digit
a 0: examples/digits/backdoor). Two attacks: the client's poisoned adapter itself (its backdoor
vector BV = poisoned − clean), and a sparse backdoor vector (SBV: the sign-consistent sum of three
such vectors, rot90's and two more the attacker made on other domains, its largest 20% kept, scaled
to the rot90 BV's norm, added to the clean rot90 adapter). The team merges the client's adapter with
its own (original, rot180; and all eight domains) by task arithmetic, Iso-C and Breadcrumbs, with
and without ``--defend ibvs`` (the defender's injected vector: its own trigger in the other corner,
label 7, on a clean original adapter) at scales 0.5 and 1. For each merge: the attack success rate
(triggered rot90 test digits of other classes read as 0), the clean accuracy (mean over the merged
domains' test splits), and the verify screen's verdict (cosine with the rot90 BV tagged known-bad,
threshold 0.2; and with the injected vector as the only reference, the screen for an unknown attack).
Writes benchmarks/results/backdoor.json and prints a table.

    python benchmarks/backdoor.py [--out benchmarks/results/backdoor.json]
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

METHODS = ("task_arithmetic", "iso_c", "breadcrumbs")
SCALES = (0.0, 0.5, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "backdoor.json")
    args = ap.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    from dithub import Repo
    from dithub.eval import ScaledAdapter
    from dithub_demo import DOMAINS, build_suite, domain_split, evaluate
    from dithub_demo.backdoor import DOMAIN, TARGET, add_trigger, build_backdoor, build_defence

    console = Console()
    suite = build_suite(ROOT / "examples" / "digits", log=console.print)
    figures = {**build_backdoor(suite, log=console.print), **build_defence(suite, log=console.print)}
    root = suite.root / "backdoor"
    from safetensors.torch import load_file

    bv, injected = load_file(str(root / "vector.safetensors")), load_file(str(root / "defence" / "injected-vector.safetensors"))
    dot = sum(float((bv[k] * injected[k]).sum()) for k in bv)
    norms = [sum(float(t[k].pow(2).sum()) for k in t) ** 0.5 for t in (bv, injected)]
    figures["cosine of the injected vector with the rot90 BV"] = dot / (norms[0] * norms[1])
    repo = Repo.init(Path(tempfile.mkdtemp(prefix="dithub-backdoor-")) / "repo")
    repo.base_add("vit-v1", suite.base("vit-v1"))
    for d in DOMAINS:
        repo.commit(suite.lora(d), d, branch=f"lora/{d}", base="vit-v1")
    attacks = {"none": "lora/rot90", "bv": "client/rot90", "sbv": "client/rot90-sbv"}
    repo.commit(root / f"{DOMAIN}-poisoned", "client's rot90 (poisoned)", branch="client/rot90", base="vit-v1")
    repo.commit(root / "defence" / f"{DOMAIN}-sbv.safetensors", "client's rot90 (SBV)", branch="client/rot90-sbv", base="vit-v1")
    repo.commit(root / "defence" / "injected-vector.safetensors", "the defender's injected vector", branch="security/injected",
                base="vit-v1")
    repo.commit(root / "vector.safetensors", "rot90 backdoor vector", branch="security/rot90-bv", base="vit-v1")
    repo.tag("known-bad/rot90-bv", "security/rot90-bv")
    repo.tag("injected/defender", "security/injected")

    split = domain_split(DOMAIN)
    triggered = add_trigger(split.x_test[split.y_test != TARGET])
    tests = {d: domain_split(d) for d in DOMAINS}

    def measure(rev: str, domains: list[str]) -> tuple[float, float]:
        commit = repo.commit_object(rev)
        model = ScaledAdapter(repo, repo.store.read_tree(commit.base), repo.store.read_tree(commit.tree)).set_scale(1.0)
        with torch.no_grad():
            asr = evaluate(model, triggered, torch.full((len(triggered),), TARGET, dtype=torch.long))
            clean = sum(evaluate(model, tests[d].x_test, tests[d].y_test) for d in domains) / len(domains)
        return asr, clean

    def screen(rev: str, pattern: str) -> tuple[float | None, str]:
        row = next(c for c in repo.verify(rev, against=[pattern], checks=["security"]).checks if c.check == "security.backdoor")
        return row.figure, row.status

    rows = []
    for group, domains in (("3 domains", ["original", DOMAIN, "rot180"]), ("8 domains", list(DOMAINS))):
        for attack, client in attacks.items():
            inputs = [client if d == DOMAIN else f"lora/{d}" for d in domains]
            for method in METHODS:
                for scale in SCALES:
                    branch = f"merged/{group[0]}-{attack}-{method}-{scale}"
                    t0 = time.perf_counter()
                    repo.merge(inputs, method, into=branch,
                               defense={"method": "ibvs", "vector": "security/injected", "scale": scale} if scale else None)
                    seconds = time.perf_counter() - t0
                    asr, clean = measure(branch, domains)
                    known, known_verdict = screen(branch, "refs/tags/known-bad/*")
                    unknown, unknown_verdict = screen(branch, "refs/tags/injected/*")
                    rows.append({"inputs": group, "attack": attack, "method": method, "ibvs_scale": scale,
                                 "attack_success": asr, "clean_accuracy": clean, "merge_seconds": seconds,
                                 "cosine_known_bv": known, "verdict_known_bv": known_verdict,
                                 "cosine_injected": unknown, "verdict_injected": unknown_verdict})
    table = Table(title="attack success % / clean accuracy % (verify: cosine with the known BV; with the injected vector)")
    for col in ("inputs", "attack", "method", "no defence", "ibvs 0.5", "ibvs 1"):
        table.add_column(col)
    for group in ("3 domains", "8 domains"):
        for attack in attacks:
            for method in METHODS:
                cells = []
                for scale in SCALES:
                    r = next(x for x in rows if (x["inputs"], x["attack"], x["method"], x["ibvs_scale"]) == (group, attack, method, scale))
                    cells.append(f"{100 * r['attack_success']:.0f} / {100 * r['clean_accuracy']:.1f} "
                                 f"({r['cosine_known_bv']:.2f} {r['verdict_known_bv']}; {r['cosine_injected']:.2f} {r['verdict_injected']})")
                table.add_row(group, attack, method, *cells)
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "figures": figures, "target": TARGET,
                                    "threshold": 0.2, "rows": rows}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
