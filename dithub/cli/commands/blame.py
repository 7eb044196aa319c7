"""dithub blame"""
from __future__ import annotations

import datetime as dt

import typer
from rich.markup import escape

from ..options import Json, Rev
from ..output import emit, out
from ..state import repo as open_repo


def blame(ctx: typer.Context, rev: Rev = "HEAD", as_json: Json = False) -> None:
    """For each tensor (or LoRA module) of REV: the commit that last changed it (first parents), its
    author, date and the size of that change."""
    blamed = open_repo(ctx).blame(rev)

    def human() -> None:
        width = max((len(b.name) for b in blamed), default=0)
        for b in blamed:
            when = f"{dt.datetime.fromtimestamp(b.time):%Y-%m-%d}"
            out.print(f"[yellow]{b.commit[:12]}[/] ({escape(b.author)} {when}) {escape(b.name):<{width}}  "
                      f"{b.status:<7} ‖Δ‖ {b.change:.4g}{'  (module ΔW)' if b.module else ''}  [dim]{escape(b.title)}[/]")

    emit(as_json, blamed, human)
