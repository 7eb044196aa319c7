"""dithub log"""
from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.markup import escape

from ..graph import graph_prefixes
from ..options import Json
from ..output import emit, out, signature_line
from ..state import repo as open_repo


def log(
    ctx: typer.Context,
    revs: Annotated[list[str] | None, typer.Argument(help="Where to start (default: HEAD).")] = None,
    graph: Annotated[bool, typer.Option("--graph", help="Draw the commit graph.")] = False,
    all_refs: Annotated[bool, typer.Option("--all", help="Start from every branch, tag and base.")] = False,
    max_count: Annotated[int | None, typer.Option("--max-count", "-n", help="Show at most N commits.")] = None,
    oneline: Annotated[bool, typer.Option("--oneline", help="One short line per commit: id, refs, title.")] = False,
    show_signature: Annotated[bool, typer.Option("--show-signature", help="Check each commit's signature against the allowed signers (`dithub config signing.allowedsigners FILE`).")] = False,
    as_json: Json = False,
) -> None:
    """Show the history of commits."""
    repo = open_repo(ctx)
    if all_refs:
        revs = sorted(set(repo.refs.as_dict("refs/").values())) or None
        if revs is None:
            emit(as_json, [], lambda: out.print("No commits yet"))
            return
    entries = repo.log(revs, max_count)
    names = repo.ref_names_by_commit()
    checks = repo.signatures([e.id for e in entries]) if show_signature else {}
    payload = [
        {"id": e.id, "parents": e.commit.parents, "tree": e.commit.tree, "base": e.commit.base,
         "author": e.commit.author, "time": e.commit.time, "message": e.commit.message,
         "op": e.commit.op.to_json(), "refs": names.get(e.id, []),
         **({"signature": checks[e.id].to_json()} if show_signature else {})}
        for e in entries
    ]

    def human() -> None:
        prefixes = graph_prefixes([(e.id, e.commit.parents) for e in entries]) if graph else [[""]] * len(entries)
        for e, lines in zip(entries, prefixes):
            star = next((i for i, line in enumerate(lines) if "*" in line), len(lines) - 1)
            for extra in lines[:star]:
                out.print(f"[red]{escape(extra)}[/]")
            deco = f" [cyan]({', '.join(names[e.id])})[/]" if e.id in names else ""
            op = e.commit.op
            what = f" [magenta]\\[{op.name}{': ' + op.method if op.method else ''}][/]" if op.name != "commit" else ""
            what += f" [blue]hf://{escape(str(op.params['hub']))}@{str(op.params['revision'])[:12]}[/]" if "hub" in op.params else ""
            title = escape(e.commit.message.splitlines()[0] if e.commit.message else "")
            lead = f"[red]{escape(lines[star])}[/] " if graph else ""
            when = f"{dt.datetime.fromtimestamp(e.commit.time):%Y-%m-%d %H:%M:%S}"
            tail = "" if oneline else f"{what} {title} [dim]— {escape(e.commit.author)}, {when}[/]"
            out.print(f"{lead}[yellow]{e.id[:12]}[/]{deco}" + (f" {title}" if oneline else tail))
            if show_signature:
                out.print(f"{' ' * len(lines[star]) + ' ' if graph else ''}  {signature_line(checks[e.id])}")
            for extra in lines[star + 1 :]:
                out.print(f"[red]{escape(extra)}[/]")

    emit(as_json, payload, human)
