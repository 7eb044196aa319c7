"""dithub config"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Json
from ..output import emit, out
from ..state import repo as open_repo


def config(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="user.signingkey (the key -S signs with) or signing.allowedsigners (the file signatures are checked against).")],
    value: Annotated[str | None, typer.Argument(help="A file to set it to (omit to print the value).")] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the setting.")] = False,
    as_json: Json = False,
) -> None:
    """Read or set a repository setting."""
    current = open_repo(ctx).config(key, value, unset=unset)
    emit(as_json, {"key": key, "value": current}, lambda: out.print(current if current is not None else f"{key} is not set"))
