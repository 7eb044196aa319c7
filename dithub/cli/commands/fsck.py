"""dithub fsck"""
from __future__ import annotations

import typer

from ...errors import CorruptObject
from ..options import Json
from ..output import emit, human_bytes, out, progress_bars
from ..state import repo as open_repo


def fsck(ctx: typer.Context, as_json: Json = False) -> None:
    """Re-hash every object and check that everything a ref reaches is present."""
    with progress_bars() as progress:
        report = open_repo(ctx).fsck(progress=progress)

    def human() -> None:
        for oid, why in report.corrupt:
            out.print(f"[red]corrupt[/] {oid}: {why}")
        for oid, why in report.missing:
            out.print(f"[red]missing[/] {oid}: {why}")
        for name, why in report.bad_refs:
            out.print(f"[red]bad ref[/] {name}: {why}")
        for oid in report.absent_bases:
            out.print(f"[yellow]absent base[/] {oid}: not fetched (dithub fetch --with-base brings it)")
        for lock in report.stale_locks:
            out.print(f"[yellow]lock file[/] {lock} (remove it if no dithub process is running)")
        out.print(f"{report.objects} objects, {human_bytes(report.bytes)}; {report.dangling} unreachable; "
                  f"{report.temp_files} leftover temp files" + ("" if report.ok else "; [red]NOT OK[/]"))

    emit(as_json, {**report.__dict__, "ok": report.ok}, human)
    if not report.ok:
        raise CorruptObject(
            f"fsck found {len(report.corrupt)} corrupt and {len(report.missing)} missing objects, "
            f"{len(report.bad_refs)} bad refs",
            "restore the named objects from a remote (dithub fetch) or re-commit the adapters",
        )
