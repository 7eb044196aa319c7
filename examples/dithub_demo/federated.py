"""Federated unlearning on the digits: K clients, one FedAvg merge, one client asks to be forgotten.

Each client holds one digit domain (non-IID, as clients do) and fine-tunes vit-v1 on it, once as
usual (the suite's task vectors) and once linearized (``dithub.train``, for ``revert --method
ntk``); the server merges them with FedAvg (task arithmetic with α = 1/K; every client has as many
images) and later removes client FORGET: exactly (the recorded merge replayed without it), by
negation, or by ntk on the linearized merge; retraining the remaining clients from scratch and
merging them again is the reference. Forget accuracy is the forgotten client's domain; retain
accuracy the mean over the others.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dithub_demo.digits import domain_split
from dithub_demo.suite import RECIPE, Suite, saved_accuracy
from dithub_demo.train import train_linear

if TYPE_CHECKING:
    from dithub.repo import Repo

CLIENTS = ("original", "rot90", "rot180", "flip", "invert")
"""Client k holds the digits of domain CLIENTS[k]."""
FORGET = 3
LINEAR_RECIPE = {"version": 1, "clients": list(CLIENTS), "epochs": 5, "lr": 1e-3}


def linear_vector(suite: Suite, domain: str) -> Path:
    return suite.root / "linear" / f"{domain}.safetensors"


def build_clients(suite: Suite, log: Callable[[str], None] = lambda _m: None) -> dict[str, dict[str, float]]:
    """Train what ``suite`` lacks: the linearized task vector of every client (``linear/``).

    Returns ``{"accuracy": {domain: …}, "seconds": {domain: …}}``, kept in ``clients.json``.
    """
    from dithub.train import save_linearized

    saved = saved_accuracy(suite.root / "clients.json", LINEAR_RECIPE)
    if saved is not None:
        return saved
    out: dict[str, dict[str, float]] = {"accuracy": {}, "seconds": {}}
    for k, domain in enumerate(CLIENTS):
        log(f"client {k}: linearized fine-tuning on {domain}")
        t0 = time.perf_counter()
        tau, acc = train_linear(suite.base("vit-v1"), domain_split(domain), seed=500 + k, epochs=LINEAR_RECIPE["epochs"],
                                lr=LINEAR_RECIPE["lr"])
        out["seconds"][domain] = time.perf_counter() - t0
        path = linear_vector(suite, domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_linearized(tau, path)
        out["accuracy"][domain] = acc
    (suite.root / "clients.json").write_text(json.dumps({"recipe": LINEAR_RECIPE, "accuracy": out}, indent=1))
    return out


@dataclass(frozen=True)
class Outcome:
    name: str
    forget: float
    retain: float
    seconds: float
    rev: str


def commit_clients(repo: Repo, suite: Suite) -> None:
    """Each client's two task vectors on ``client/<k>`` and ``client-lin/<k>``; FedAvg merges of each on
    ``server`` and ``server-lin``."""
    for k, domain in enumerate(CLIENTS):
        repo.commit(suite.task_vector(domain), f"client {k} ({domain})", branch=f"client/{k}", base="vit-v1")
        repo.commit(linear_vector(suite, domain), f"client {k} ({domain}), linearized", branch=f"client-lin/{k}", base="vit-v1")
    alpha = {"alpha": 1 / len(CLIENTS)}
    repo.merge([f"client/{k}" for k in range(len(CLIENTS))], "task_arithmetic", alpha, into="server", message="FedAvg")
    repo.merge([f"client-lin/{k}" for k in range(len(CLIENTS))], "task_arithmetic", alpha, into="server-lin",
               message="FedAvg (linearized clients)")


def unlearn(repo: Repo, suite: Suite, *, retrain: bool = False, forget: int = FORGET) -> list[Outcome]:
    """Remove client ``forget`` from both merges in every way; score each result (and, with
    ``retrain``, retrain the other clients from scratch and merge them: the reference)."""
    from dithub.ops.merge.plan import plan_merge
    from dithub.ops.merge.run import run_merge
    from dithub_demo.scoreboard import score
    from dithub_demo.train import train_full

    others = [k for k in range(len(CLIENTS)) if k != forget]

    def outcome(name: str, rev: str, seconds: float, scale: float = 1.0) -> Outcome:
        acc = score(repo, rev, list(CLIENTS), scale=scale)
        retain = sum(acc[CLIENTS[k]] for k in others) / len(others)
        return Outcome(name, acc[CLIENTS[forget]], retain, seconds, rev)

    results = [outcome("vit-v1, no client", "server", 0.0, scale=0.0), outcome("FedAvg, all clients", "server", 0.0),
               outcome("FedAvg, linearized clients", "server-lin", 0.0)]
    for method, server in (("exact", "server"), ("negation", "server"), ("ntk", "server-lin")):
        branch = f"unlearned/{method}"
        repo.create_branch(branch, server)
        t0 = time.perf_counter()
        repo.revert(f"{server.replace('server', 'client')}/{forget}", from_merge=server, method=method, branch=branch)
        results.append(outcome(f"revert --method {method}" + (" (linearized clients)" if method == "ntk" else ""), branch,
                               time.perf_counter() - t0))
    if retrain:
        import tempfile

        from safetensors.torch import save_file

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for k in others:  # the suite's recipe and seed: retraining reproduces the clients' vectors
                tau, _ = train_full(suite.base("vit-v1"), domain_split(CLIENTS[k]), seed=200 + suite.domains.index(CLIENTS[k]),
                                    epochs=RECIPE["full_epochs"])
                save_file(tau, str(Path(tmp) / f"{k}.safetensors"))
                repo.commit(Path(tmp) / f"{k}.safetensors", f"client {k} retrained", branch=f"retrained/{k}", base="vit-v1")
        tree = run_merge(repo, plan_merge(repo, [f"retrained/{k}" for k in others], "task_arithmetic", {"alpha": 1 / len(CLIENTS)}))
        repo.commit_tree(tree, "FedAvg of the retrained clients", branch="server-retrained", parents=[],
                         base=repo.commit_object("server").base)
        results.append(outcome("retrain without the client (reference)", "server-retrained", time.perf_counter() - t0))
    return results
