"""dithub rebase"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Executor, Json, Metric, Sign, SigningKey, alpha_value, key_values, signing
from ..output import emit, out, progress_bars, short
from ..state import repo as open_repo

# kept in step with dithub.algorithms.rebase.REGISTRY by a test (importing it here would load torch at start-up)
METHODS = ("naive", "transfusion", "gradfix", "theseus")


def rebase(
    ctx: typer.Context,
    branch: Annotated[str | None, typer.Argument(help="Branch to rebase (default: the current one).")] = None,
    onto: Annotated[str, typer.Option("--onto", help="The base to move onto (a name from `dithub base list`).")] = ...,  # type: ignore[assignment]
    method: Annotated[str, typer.Option("--method", help=f"Rebase method: {', '.join(METHODS)}.")] = "transfusion",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A method parameter, KEY=VALUE (repeatable).")] = None,
    probe: Annotated[str | None, typer.Option("--probe", help="Probe set (gradfix: inputs and labels; theseus: inputs): .safetensors or module:function.")] = None,
    alpha: Annotated[str | None, typer.Option("--alpha", help="Scale of the moved update (default 1), or 'auto': the best on --probe by --metric.")] = None,
    metric: Metric = "accuracy",
    all_branches: Annotated[bool, typer.Option("--all", help="Rebase every branch whose head is on another base.")] = False,
    tip: Annotated[bool, typer.Option("--tip", help="Rewrite only the branch's head commit.")] = False,
    executor: Executor = "local",
    sign: Sign = False,
    signing_key: SigningKey = None,
    as_json: Json = False,
) -> None:
    """Move a branch's adapters onto another base checkpoint (new commits; ORIG_HEAD keeps the old head)."""
    scale = alpha_value(alpha, probe, metric, probe_without_auto=True)
    repo = open_repo(ctx)
    with signing(repo, sign, signing_key), progress_bars() as progress:
        results = repo.rebase(onto, branch, method, key_values(param, "--param", "samples=32"), all_branches=all_branches, tip_only=tip,
                              alpha=1.0 if scale is None else scale, probe=probe, metric=metric, executor=executor, progress=progress)
    data = [{"branch": r.branch, "old_head": r.old_head, "new_head": r.new_head,
             "rewritten": [{"from": a, "to": b, "alpha": r.alphas[b]} for a, b in r.rewritten]} for r in results]

    def human() -> None:
        for r in results:
            scales = sorted(set(r.alphas.values()))
            out.print(f"Rebased {r.branch} onto {onto} with {method}: {len(r.rewritten)} commit(s), "
                      f"{short(r.old_head)} -> {short(r.new_head)} (alpha {', '.join(f'{a:g}' for a in scales)})")
        out.print(f"ORIG_HEAD is {short(results[0].old_head)}")

    emit(as_json, data, human)
