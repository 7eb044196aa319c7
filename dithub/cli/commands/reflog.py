"""dithub reflog"""
from __future__ import annotations

import typer
from rich.markup import escape

from ..options import Json
from ..output import emit, lines, short
from ..state import repo as open_repo


def reflog(ctx: typer.Context, ref: str = typer.Argument("HEAD", help="The ref whose moves to list."), as_json: Json = False) -> None:
    """List the moves of a ref, newest first."""
    entries = list(reversed(open_repo(ctx).reflog(ref)))
    emit(as_json, entries, lines(f"[yellow]{short(e.new)}[/] {ref}@{{{i}}}: {escape(e.message)}" for i, e in enumerate(entries)))
