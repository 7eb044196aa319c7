"""dithub migrate"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Json
from ..output import emit, out, progress_bars
from ..state import repo as open_repo


def migrate(
    ctx: typer.Context,
    hash: Annotated[str, typer.Option("--hash", help="The object hash to convert to: blake3 (or xxh3).")] = "blake3",
    as_json: Json = False,
) -> None:
    """Rename every object by another hash (xxh3 -> blake3), refs, reflogs and op records with them; a crash leaves the old repository intact."""
    repo = open_repo(ctx)
    with progress_bars() as progress:
        report = repo.migrate(hash, progress)
    emit(as_json, {"from": report.old, "to": report.new, "objects": report.objects, "refs": report.refs,
                   "reflog_entries": report.reflog_entries, "dropped_reflog_entries": report.dropped_reflog_entries,
                   "dropped_signatures": report.dropped_signatures,
                   "map": str(report.map_file)},
         lambda: out.print(f"migrated {report.objects} objects and {report.refs} refs from {report.old} to {report.new}; "
                           f"old -> new ids in {report.map_file}"
                           + (f" ({report.dropped_reflog_entries} reflog entries named objects gc had removed: dropped)"
                              if report.dropped_reflog_entries else "")
                           + (f"; {report.dropped_signatures} signed commits are unsigned now (a signature covers the old ids: "
                              "sign the heads again)" if report.dropped_signatures else "")))
