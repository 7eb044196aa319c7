"""dithub fsck"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput, CorruptObject
from ..options import Executor, Json
from ..output import emit, human_bytes, out, progress_bars
from ..state import repo as open_repo


def fsck(
    ctx: typer.Context,
    remote: Annotated[str | None, typer.Argument(help="With --repair: the remote to fetch damaged or missing objects from (default: origin, or the only remote).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Set damaged objects aside and fetch them, and missing ones, from a remote.")] = False,
    executor: Executor = "local",
    as_json: Json = False,
) -> None:
    """Re-hash every object and check that everything a ref reaches is present."""
    if remote and not repair:
        raise BadInput(f"a remote ({remote}) is only used with --repair", "dithub fsck --repair REMOTE")
    with progress_bars() as progress:
        report = open_repo(ctx).fsck(repair=repair, remote=remote, executor=executor, progress=progress)

    def human() -> None:
        if repair:
            out.print(f"repaired {len(report.repaired)} objects" + (":" if report.repaired else ""))
            for oid in report.repaired:
                out.print(f"  [green]restored[/] {oid}")
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
        raise CorruptObject(f"fsck found {len(report.corrupt)} corrupt and {len(report.missing)} missing objects, "
                            f"{len(report.bad_refs)} bad refs",
                            "dithub fsck --repair REMOTE fetches them again; re-committing the adapters also restores them")
