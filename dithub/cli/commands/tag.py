"""dithub tag"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import BadInput
from ...formats.sshsig import SignatureError
from ..options import Force, Json, SigningKey, signing
from ..output import emit, lines, out, short, signature_line
from ..state import repo as open_repo


def tag(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="NAME [REV] to create; with -d NAME.")] = None,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete the tag.")] = False,
    force: Force = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Make an annotated tag with this message.")] = None,
    sign: Annotated[bool, typer.Option("--sign", "-s", help="Make a signed annotated tag (--signing-key, or user.signingkey).")] = False,
    signing_key: SigningKey = None,
    verify: Annotated[bool, typer.Option("--verify", "-v", help="Check the tag's signature against signing.allowedsigners.")] = False,
    as_json: Json = False,
) -> None:
    """List, create, delete or verify tags (annotated and signed with -m / -s)."""
    repo = open_repo(ctx)
    names = names or []
    if verify:
        if len(names) != 1 or delete or sign or message:
            raise BadInput("tag -v takes exactly one tag name")
        check = repo.tag_signature(names[0])
        emit(as_json, check.to_json(), lambda: out.print(f"{names[0]}: {signature_line(check)}"))
        if check.status != "good":
            raise SignatureError(f"tag {names[0]} has no good signature ({check.status}{': ' + check.detail if check.detail else ''})")
        return
    if delete:
        if len(names) != 1:
            raise BadInput("tag -d takes exactly one tag name")
        oid = repo.delete_tag(names[0])
        out.print(f"Deleted tag {names[0]} (was {short(oid)})")
    elif names:
        if len(names) > 2:
            raise BadInput("tag takes NAME and an optional REV")
        with signing(repo, sign, signing_key):
            oid = repo.tag(names[0], names[1] if len(names) == 2 else "HEAD", force, message)
        out.print(f"Tagged {short(repo.store.peel(oid))} as {names[0]}" + (" (signed)" if sign or signing_key else ""))
    else:
        tags = repo.tags()
        emit(as_json, tags, lines(f"{n}  [yellow]{short(o)}[/]" for n, o in tags.items()))
