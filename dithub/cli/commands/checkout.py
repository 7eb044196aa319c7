"""dithub checkout"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import Rev
from ..output import out, progress_bars, short
from ..state import repo as open_repo


def checkout(
    ctx: typer.Context,
    rev: Rev,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the adapter here instead of moving HEAD.")] = None,
) -> None:
    """Move HEAD to a branch or commit, or write an adapter out with -o DIR."""
    repo = open_repo(ctx)
    if output is not None:
        with progress_bars() as progress:
            path = repo.export(rev, output, progress=progress)
        out.print(f"Wrote {rev} to {path}")
        return
    oid = repo.checkout(rev)
    branch = repo.current_branch()
    out.print(f"Switched to branch '{branch}'" if branch else f"HEAD is now at {short(oid)} (detached)")
