"""Federated unlearning with dithub: five clients, a FedAvg merge, client 3 asks to be forgotten.

Each client fine-tunes vit-v1 on its own digit domain and commits its task vector on `client/<k>`
(and a linearized one on `client-lin/<k>`); the server merges them (FedAvg: task arithmetic, α = 1/5)
and, when client 3 leaves, removes it three ways — `revert --method exact` (the recorded merge
replayed without it), `negation` (subtract its weighted vector) and `ntk` (the same on the
linearized clients' merge) — and prints forget and retain accuracy and the time each took.
The client vectors ship in examples/digits (tv/ and linear/); `--retrain` also retrains the four
other clients from scratch and merges them: the reference (about a minute).

    python examples/federated.py [--retrain] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from dithub import Repo  # noqa: E402
from dithub_demo import build_suite  # noqa: E402
from dithub_demo.federated import CLIENTS, FORGET, Outcome, build_clients, commit_clients, unlearn  # noqa: E402

SHIPPED = Path(__file__).resolve().parent / "digits"


def table(outcomes: list[Outcome]) -> Table:
    out = Table(title=f"Forgetting client {FORGET} ({CLIENTS[FORGET]} digits) from a FedAvg of {len(CLIENTS)} clients")
    for c in ("model", f"forget: {CLIENTS[FORGET]} %", "retain: the other clients %", "seconds"):
        out.add_column(c, justify="left" if c == "model" else "right")
    for o in outcomes:
        out.add_row(o.name, f"{100 * o.forget:.1f}", f"{100 * o.retain:.1f}", f"{o.seconds:.2f}" if o.seconds else "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    ap.add_argument("--retrain", action="store_true", help="also retrain the other clients from scratch (the reference)")
    args = ap.parse_args()
    console = Console()
    work = args.dir or Path(tempfile.mkdtemp(prefix="dithub-federated-"))
    suite = build_suite(SHIPPED, log=console.print)
    build_clients(suite, log=console.print)
    repo = Repo.init(work / "repo")
    repo.base_add("vit-v1", suite.base("vit-v1"))
    with console.status("committing the clients and merging them"):
        commit_clients(repo, suite)
    with console.status("forgetting client 3"):
        outcomes = unlearn(repo, suite, retrain=args.retrain)
    console.print(table(outcomes))
    console.print(f"the repository is {work / 'repo'}: `dithub log unlearned/exact -n 2` shows what was removed from what")


if __name__ == "__main__":
    main()
