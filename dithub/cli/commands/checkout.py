"""dithub checkout"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Card
from ..output import out, progress_bars, short
from ..state import repo as open_repo


def checkout(
    ctx: typer.Context,
    revs: Annotated[list[str], typer.Argument(help="A revision; with -o, several compose one adapter.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the adapter here instead of moving HEAD.")] = None,
    method: Annotated[str, typer.Option("--method", help="How several revisions compose (a merge method).")] = "mean_ba",
    card: Card = False,
) -> None:
    """Move HEAD to a branch or commit, or write an adapter out with -o DIR (composed from several, uncommitted)."""
    repo = open_repo(ctx)
    if len(revs) > 1:
        if output is None:
            raise BadInput("checkout of several revisions composes an adapter and needs -o DIR")
        with progress_bars() as progress:
            path = repo.compose(revs, output, method, progress=progress)
        out.print(f"Wrote {', '.join(revs)} composed with {method} to {path} (no commit)")
        return
    rev = revs[0]
    if output is not None:
        with progress_bars() as progress:
            path = repo.export(rev, output, card=card, progress=progress)
        out.print(f"Wrote {rev} to {path}")
        return
    oid = repo.checkout(rev)
    branch = repo.current_branch()
    out.print(f"Switched to branch '{branch}'" if branch else f"HEAD is now at {short(oid)} (detached)")
