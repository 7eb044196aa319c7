"""Unlearning on the digits: forget and retain accuracy and wall time of each way to remove a client.

Five clients (one digit domain each) merged with FedAvg; client 3 is removed by `revert --method
exact`, `negation` and `ntk` (on the linearized clients' merge), and by the reference: retraining
the four other clients from scratch and merging them. Writes benchmarks/results/unlearning.json
and prints a table.

    python benchmarks/unlearning.py [--out benchmarks/results/unlearning.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from _setup import HERE, ROOT
sys.path.insert(0, str(ROOT / "examples"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "unlearning.json")
    args = ap.parse_args()
    from federated import SHIPPED, table
    from rich.console import Console

    from dithub import Repo
    from dithub_demo import build_suite
    from dithub_demo.federated import CLIENTS, FORGET, build_clients, commit_clients, unlearn

    console = Console()
    suite = build_suite(SHIPPED, log=console.print)
    clients = build_clients(suite, log=console.print)
    repo = Repo.init(Path(tempfile.mkdtemp(prefix="dithub-unlearning-")) / "repo")
    repo.base_add("vit-v1", suite.base("vit-v1"))
    commit_clients(repo, suite)
    outcomes = unlearn(repo, suite, retrain=True)
    console.print(table(outcomes))
    same = repo.commit_object("unlearned/exact").tree == repo.commit_object("server-retrained").tree
    console.print(f"exact revert and retraining give the same tree: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "clients": list(CLIENTS), "forget": FORGET,
                                    "linearized_training_seconds": clients["seconds"], "exact_equals_retrained": same,
                                    "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
