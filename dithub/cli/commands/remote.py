"""dithub remote add|remove|list, fetch, push, pull, clone"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..options import Json, key_values
from ..output import emit, lines, err, human_bytes, out, progress_bars, short
from ..state import repo as open_repo

app = typer.Typer(help="Remote repositories on a path, file://, memory:// or s3:// (fsspec).", no_args_is_help=True)

Options = Annotated[list[str] | None, typer.Option("--option", "-o", help="A storage option KEY=VALUE for fsspec (VALUE as JSON when it parses), e.g. -o anon=true.")]


def _options(pairs: list[str] | None) -> dict[str, Any]:
    """Storage options, each value as JSON where it parses."""
    options: dict[str, Any] = key_values(pairs, "-o", "client_kwargs='{\"endpoint_url\": \"http://127.0.0.1:9000\"}'")
    for key, value in options.items():
        with contextlib.suppress(ValueError):
            options[key] = json.loads(value)
    return options


@app.command("add")
def add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name, e.g. origin.")],
        url: Annotated[str, typer.Argument(help="A path, file://, memory:// or s3://bucket/prefix URL.")], option: Options = None) -> None:
    """Add a remote."""
    from ...ops.sync import remote_add

    remote_add(open_repo(ctx), name, url, _options(option))
    out.print(f"Remote {name} -> {url}")


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name.")]) -> None:
    """Remove a remote and its remote-tracking refs."""
    from ...ops.sync import remote_remove

    remote_remove(open_repo(ctx), name)
    out.print(f"Removed remote {name}")


@app.command("list")
def list_(ctx: typer.Context, as_json: Json = False) -> None:
    """List the remotes."""
    from ...ops.sync import remotes

    known = remotes(open_repo(ctx))
    emit(as_json, known, lines(f"{n}  {r['url']}" for n, r in sorted(known.items())))


def _report(as_json: bool, verb: str, result: Any) -> None:
    data = {"remote": result.remote, "objects": result.objects, "bytes": result.bytes, "requests": result.requests,
            "refs": {r: {"old": o, "new": n} for r, (o, n) in result.refs.items()},
            "skipped": [{"ref": name, "why": why} for name, why in result.skipped]}
    for name, why in result.skipped:  # one line each, on stderr, whatever the output format
        err.print(f"[yellow]warning:[/] skipped ref {escape(ascii(name))} from {result.remote}: {escape(why)}")

    def human() -> None:
        out.print(f"{verb} {result.objects} objects ({human_bytes(result.bytes)}) {'from' if verb != 'Pushed' else 'to'} {result.remote}"
                  f" in {result.requests} requests")
        for ref, (old, new) in result.refs.items():
            out.print(f"  {ref}: {short(old) if old else '(new)'} -> {short(new)}")

    emit(as_json, data, human)


VerifySignatures = Annotated[bool, typer.Option("--verify-signatures", help="Refuse unless every head fetched has a good signature by a key of `dithub config signing.allowedsigners` (no ref moves otherwise).")]

def fetch(ctx: typer.Context, remote: Annotated[str, typer.Argument(help="Remote name.")] = "origin",
          branches: Annotated[list[str] | None, typer.Argument(help="Branches to fetch (default: all, with tags and bases).")] = None,
          with_base: Annotated[bool, typer.Option("--with-base", help="Also fetch the base checkpoints of the fetched commits.")] = False,
          verify_signatures: VerifySignatures = False, as_json: Json = False) -> None:
    """Bring a remote's objects and branches (as refs/remotes/REMOTE/BRANCH); only missing objects travel."""
    from ...ops.sync import fetch as do_fetch

    repo = open_repo(ctx)
    with progress_bars() as progress:
        result = do_fetch(repo, remote, branches or None, with_base=with_base, verify_signatures=verify_signatures, progress=progress)
    _report(as_json, "Fetched", result)


def push(ctx: typer.Context, remote: Annotated[str, typer.Argument(help="Remote name.")] = "origin",
         branches: Annotated[list[str] | None, typer.Argument(help="Branches to push (default: the current one).")] = None,
         force: Annotated[bool, typer.Option("--force", help="Overwrite a remote branch that is not an ancestor.")] = False,
         as_json: Json = False) -> None:
    """Send branches (with their bases) to a remote; objects first, refs last by compare-and-swap."""
    from ...ops.sync import push as do_push

    repo = open_repo(ctx)
    with progress_bars() as progress:
        result = do_push(repo, remote, branches or None, force=force, progress=progress)
    _report(as_json, "Pushed", result)


def pull(ctx: typer.Context, remote: Annotated[str | None, typer.Argument(help="Remote name (default: the branch's upstream).")] = None,
         branch: Annotated[str | None, typer.Argument(help="Branch (default: the current one).")] = None,
         method: Annotated[str | None, typer.Option("--method", help="Where the branches have diverged, merge them with this method.")] = None,
         param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A method parameter, KEY=VALUE (repeatable).")] = None,
         verify_signatures: VerifySignatures = False, as_json: Json = False) -> None:
    """Fetch the branch's upstream and fast-forward the branch; diverged branches merge with --method."""
    from ...ops.sync import pull as do_pull

    repo = open_repo(ctx)
    with progress_bars() as progress:
        result = do_pull(repo, remote, branch, method=method, params=key_values(param, "--param", "density=0.2"),
                         verify_signatures=verify_signatures, progress=progress)
    _report(as_json, "Pulled", result)


def clone(url: Annotated[str, typer.Argument(help="The remote's URL.")],
          directory: Annotated[Path, typer.Argument(help="A new directory.")], option: Options = None, as_json: Json = False) -> None:
    """Copy a remote repository: every branch, tag and base; the remote is named origin."""
    from ...repo import Repo

    with progress_bars() as progress:
        _repo, result = Repo.clone(url, directory, options=_options(option), progress=progress)
    _report(as_json, "Cloned", result)
