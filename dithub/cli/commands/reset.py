"""dithub reset"""
from __future__ import annotations

import typer

from ..options import Json, Rev
from ..output import emit, out, short
from ..state import repo as open_repo


def reset(ctx: typer.Context, rev: Rev, as_json: Json = False) -> None:
    """Move the current branch to REV (logged; ORIG_HEAD keeps the old head). No working tree: no --soft or --hard."""
    branch, old, new = open_repo(ctx).reset(rev)
    emit(as_json, {"branch": branch, "old": old, "new": new},
         lambda: out.print(f"{branch or 'HEAD'} is now at {short(new)} (was {short(old) if old else 'nothing'}; ORIG_HEAD keeps it)"))
