"""dithub commit"""
from __future__ import annotations

from typing import Annotated

import typer

from ..options import Json, Sign, SigningKey, signing
from ..output import emit, human_bytes, out, progress_bars, short
from ..state import repo as open_repo


def commit(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A peft adapter directory, a .safetensors task vector, or a model directory "
                                             "fine-tuned from --base; a path, or hf://org/name[@revision].")],
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")],
    branch: Annotated[str | None, typer.Option("--branch", "-b", help="Commit on this branch (created from HEAD if new).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Named base checkpoint (see `dithub base list`).")] = None,
    author: Annotated[str | None, typer.Option("--author", help="Author (default: $DITHUB_AUTHOR or login).")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Commit even if nothing changed.")] = False,
    sign: Sign = False,
    signing_key: SigningKey = None,
    as_json: Json = False,
) -> None:
    """Import an adapter as a new commit."""
    repo = open_repo(ctx)
    with signing(repo, sign, signing_key), progress_bars() as progress:
        res = repo.commit(path, message, branch=branch, base=base, author=author, allow_empty=allow_empty, progress=progress)
    emit(as_json, res, lambda: out.print(
        f"\\[{res.branch} {short(res.id)}] {message.splitlines()[0]}: {res.new_objects} new objects, "
        f"{human_bytes(res.new_bytes)} written for {human_bytes(res.total_bytes)} of tensors"
    ))
