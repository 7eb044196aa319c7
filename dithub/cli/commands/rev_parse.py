"""dithub rev-parse"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Json
from ..output import emit, lines
from ..state import repo as open_repo


def rev_parse(ctx: typer.Context, revs: Annotated[list[str], typer.Argument(help="Revisions to resolve to commit ids.")],
              as_json: Json = False) -> None:
    """Print the full commit id each revision names."""
    repo = open_repo(ctx)
    ids = {rev: repo.resolve(rev) for rev in revs}
    emit(as_json, ids, lines(ids.values()))
