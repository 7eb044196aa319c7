"""dithub branch"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Force, Json
from ..output import emit, lines, out, short
from ..state import repo as open_repo


def branch(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="NAME [START] to create; with -d NAME; with -m OLD NEW.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the branch.")] = False,
    move: Annotated[bool, typer.Option("--move", "-m", help="Rename OLD to NEW.")] = False,
    force: Force = False,
    set_upstream: Annotated[str | None, typer.Option("--set-upstream", "-u", help="REMOTE, or REMOTE/BRANCH, that pull and push use for NAME (default: the current branch).")] = None,
    as_json: Json = False,
) -> None:
    """List, create, delete or rename branches; set a branch's upstream."""
    repo = open_repo(ctx)
    names = names or []
    if set_upstream is not None:
        from ...ops.sync import remotes, set_upstream as set_up

        target = names[0] if names else repo.current_branch()
        if target is None or len(names) > 1:
            raise BadInput("branch --set-upstream REMOTE[/BRANCH] takes at most one branch name (default: the current one)")
        remote, _, remote_branch = set_upstream.partition("/")
        if remote not in remotes(repo):
            raise BadInput(f"no remote {remote!r}", "dithub remote add NAME URL first")
        set_up(repo, target, remote, remote_branch or target)
        out.print(f"Branch {target} tracks {remote}/{remote_branch or target}")
        return
    if delete:
        if len(names) != 1:
            raise BadInput("branch -d takes exactly one branch name")
        oid = repo.delete_branch(names[0])
        out.print(f"Deleted branch {names[0]} (was {short(oid)})")
    elif move:
        if len(names) != 2:
            raise BadInput("branch -m takes OLD and NEW")
        repo.rename_branch(*names)
        out.print(f"Renamed branch {names[0]} to {names[1]}")
    elif names:
        if len(names) > 2:
            raise BadInput("branch takes NAME and an optional START")
        oid = repo.create_branch(names[0], names[1] if len(names) == 2 else "HEAD", force)
        out.print(f"Created branch {names[0]} at {short(oid)}")
    else:
        current = repo.current_branch()
        heads = repo.branches()
        emit(as_json, {"current": current, "branches": heads},
             lines(f"{'*' if n == current else ' '} {n}  [yellow]{short(o)}[/]" for n, o in heads.items()))
