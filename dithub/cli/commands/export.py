"""dithub export"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import Card, Rev
from ..output import out, progress_bars
from ..state import repo as open_repo


def export(
    ctx: typer.Context,
    rev: Rev,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (or .safetensors file for a task vector).")],
    merge_into: Annotated[str | None, typer.Option("--merge-into", help="Write full weights: this base with the adapter folded in.")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="Like --merge-into, with the base the commit records.")] = False,
    card: Card = False,
) -> None:
    """Write an adapter (or, with --merge-into, full merged weights) to disk."""
    repo = open_repo(ctx)
    with progress_bars() as progress:
        if merge_into or merged:
            path = repo.export_merged(rev, merge_into, output, progress=progress)
        else:
            path = repo.export(rev, output, card=card, progress=progress)
    out.print(f"Wrote {rev} to {path}")
