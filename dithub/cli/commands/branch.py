"""dithub branch"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Force, Json
from ..output import emit, out, short
from ..state import repo as open_repo


def branch(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="NAME [START] to create; with -d NAME; with -m OLD NEW.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the branch.")] = False,
    move: Annotated[bool, typer.Option("--move", "-m", help="Rename OLD to NEW.")] = False,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """List, create, delete or rename branches."""
    repo = open_repo(ctx)
    names = names or []
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
        emit(as_json, {"current": current, "branches": heads}, lambda: [
            out.print(f"{'*' if n == current else ' '} {n}  [yellow]{short(o)}[/]") for n, o in heads.items()
        ])
