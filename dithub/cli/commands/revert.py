"""dithub revert"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Executor, Json, Metric, Sign, SigningKey, alpha_value, key_values, signing
from ..output import emit, out, short
from ..state import repo as open_repo

METHODS = ("exact", "negation", "ntk")


def revert(
    ctx: typer.Context,
    rev: Annotated[str, typer.Argument(help="The commit to undo; with --from, the input to remove from that merge.")],
    from_merge: Annotated[str | None, typer.Option("--from", help="The merge commit to remove REV from.")] = None,
    method: Annotated[str, typer.Option("--method", help="exact (replay the merge without REV), negation or ntk (subtract α·τ).")] = "exact",
    alpha: Annotated[str | None, typer.Option("--alpha", help="negation/ntk: the scale subtracted (default: the merge's), or 'auto': the largest keeping --metric on --probe within --margin.")] = None,
    probe: Annotated[str | None, typer.Option("--probe", help="Retain probe set for --alpha auto (.safetensors with inputs, labels).")] = None,
    metric: Metric = "accuracy",
    margin: Annotated[float | None, typer.Option("--margin", help="--alpha auto: the retain accuracy it may lose (default 0.02).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow negation on a merge that is not a sum of its inputs.")] = False,
    forget_class: Annotated[int | None, typer.Option("--class", help="Forget this class of REV's adapter by its class vector (arXiv 2510.11268), measured on a labelled --probe.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="--class: a parameter of the edit, KEY=VALUE (alpha, gate, steps, lr, seed).")] = None,
    executor: Executor = "local",
    into: Annotated[str | None, typer.Option("--into", help="Branch to commit on (default: the current branch).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    sign: Sign = False,
    signing_key: SigningKey = None,
    as_json: Json = False,
) -> None:
    """Undo a commit, remove one input from a merge (unlearning), or forget one class of an adapter, as a new commit; history is kept."""
    if method not in METHODS:
        raise BadInput(f"unknown revert method {method!r}", f"valid methods: {', '.join(METHODS)}")
    value = alpha_value(alpha, probe, metric, probe_without_auto=forget_class is not None)
    repo = open_repo(ctx)
    with signing(repo, sign, signing_key):
        oid = repo.revert(rev, from_merge=from_merge, method=method, alpha=value, probe=probe, metric=metric, force=force,
                          margin=margin, branch=into, message=message, executor=executor, forget_class=forget_class,
                          params=key_values(param, "--param", "alpha=4"))
    commit = repo.store.read_commit(oid)
    branch = into or repo.current_branch()
    emit(as_json, {"id": oid, "branch": branch, "op": commit.op.to_json(), "parents": commit.parents},
         lambda: out.print(f"{commit.message.splitlines()[0]} as {short(oid)} on {branch}"
                           + (f" (alpha {commit.op.params['alpha']:g})" if "alpha" in commit.op.params else "")))
