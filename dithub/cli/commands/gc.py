"""dithub gc"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Json
from ..output import emit, human_bytes, out
from ..state import repo as open_repo


def gc(
    ctx: typer.Context,
    prune_now: Annotated[bool, typer.Option("--prune-now", help="No grace period for new unreachable objects.")] = False,
    as_json: Json = False,
) -> None:
    """Delete objects no ref or reflog reaches (older than an hour unless --prune-now)."""
    report = open_repo(ctx).gc(grace_seconds=0.0 if prune_now else 3600.0)
    emit(as_json, report, lambda: out.print(
        f"Removed {report.removed_objects} objects ({human_bytes(report.removed_bytes)}) and "
        f"{report.removed_temp_files} temp files; kept {report.kept_objects}"
    ))
