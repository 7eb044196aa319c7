"""dithub init"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...repo import Repo
from ..output import out
from ..state import State


def init(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="Directory to create the repository in (default: -C or .).")] = None,
    branch: Annotated[str, typer.Option("--initial-branch", "-b", help="Name of the first branch.")] = "main",
    hash: Annotated[str, typer.Option("--hash", help="How objects are named: blake3 (collision-resistant, the default) or xxh3 (the fast legacy format).")] = "blake3",
) -> None:
    """Create an empty dithub repository."""
    state: State = ctx.obj
    repo = Repo.init(path or state.directory, branch=branch, hash=hash)
    out.print(f"Initialized empty dithub repository in {repo.path}/.dithub")
