"""dithub tag"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Force, Json
from ..output import emit, lines, out, short
from ..state import repo as open_repo


def tag(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="NAME [REV] to create; with -d NAME.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the tag.")] = False,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """List, create or delete tags."""
    repo = open_repo(ctx)
    names = names or []
    if delete:
        if len(names) != 1:
            raise BadInput("tag -d takes exactly one tag name")
        oid = repo.delete_tag(names[0])
        out.print(f"Deleted tag {names[0]} (was {short(oid)})")
    elif names:
        if len(names) > 2:
            raise BadInput("tag takes NAME and an optional REV")
        oid = repo.tag(names[0], names[1] if len(names) == 2 else "HEAD", force)
        out.print(f"Tagged {short(oid)} as {names[0]}")
    else:
        tags = repo.tags()
        emit(as_json, tags, lines(f"{n}  [yellow]{short(o)}[/]" for n, o in tags.items()))
