"""dithub checkout"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ...errors import BadInput
from ..options import Card, Json
from ..output import emit, err, out, progress_bars, short
from ..state import repo as open_repo


def checkout(
    ctx: typer.Context,
    revs: Annotated[list[str] | None, typer.Argument(help="A revision; with -o, several compose one adapter.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the adapter here instead of moving HEAD.")] = None,
    method: Annotated[str, typer.Option("--method", help="How several revisions compose (a merge method).")] = "mean_ba",
    classes: Annotated[str | None, typer.Option("--classes", help="Compose the branches of these classes (comma-separated), as DitHub does.")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="With --classes: the branch of class C is PREFIX + C.")] = "class/",
    card: Card = False,
    as_json: Json = False,
) -> None:
    """Move HEAD to a branch or commit, or write an adapter out with -o DIR (composed from several, uncommitted)."""
    repo = open_repo(ctx)
    if classes is not None:
        if revs or output is None:
            raise BadInput("--classes composes the classes' branches into -o DIR", "pass -o DIR, and no revisions")
        used, missing = repo.class_branches(classes.split(","), prefix)
        if missing:
            err.print(f"[yellow]warning:[/] no branch for class(es) {escape(', '.join(missing))} (looked for {escape(prefix)}NAME): skipped")
        if not used:
            raise BadInput(f"no branch for any of the classes {classes!r}", f"see `dithub branch` (branches named {prefix}CLASS)")
        with progress_bars() as progress:
            path = repo.export(used[0], output, progress=progress) if len(used) == 1 else repo.compose(used, output, method, progress=progress)
        emit(as_json, {"used": used, "missing": missing, "method": method if len(used) > 1 else None, "output": str(path)},
             lambda: out.print(f"Wrote {', '.join(used)}" + (f" composed with {method}" if len(used) > 1 else "") + f" to {path} (no commit)"))
        return
    if not revs:
        raise BadInput("name a revision to check out (or --classes with -o DIR)")
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
