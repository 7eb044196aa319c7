"""dithub export"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...errors import BadInput
from ..options import Card, Rev
from ..output import out, progress_bars
from ..state import repo as open_repo


def export(
    ctx: typer.Context,
    rev: Rev,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (or .safetensors file for a task vector).")],
    merge_into: Annotated[str | None, typer.Option("--merge-into", help="Write full weights: this base (a model directory, a base or revision, or hf://org/name) with the adapter folded in.")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="Like --merge-into, with the base the commit records.")] = False,
    max_shard_size: Annotated[str, typer.Option("--max-shard-size", help="With --merged: the largest weight file, as save_pretrained (e.g. 5GB, 500MB).")] = "5GB",
    card: Card = False,
    model_signing_key: Annotated[Path | None, typer.Option("--model-signing-key", help="Also write an OpenSSF model signature (model-signing) with this EC private key (PEM).")] = None,
    model_signature: Annotated[Path | None, typer.Option("--model-signature", help="Where the OpenSSF signature goes (default: OUTPUT.sig beside the output).")] = None,
) -> None:
    """Write an adapter (or, with --merge-into, full merged weights) to disk."""
    repo = open_repo(ctx)
    with progress_bars() as progress:
        if merge_into or merged:
            path = repo.export_merged(rev, merge_into, output, max_shard_size=max_shard_size, progress=progress)
        else:
            path = repo.export(rev, output, card=card, progress=progress)
    out.print(f"Wrote {rev} to {path}")
    if model_signing_key is not None:
        signature = repo.sign_model(path, model_signing_key, model_signature)
        out.print(f"Signed {path} (OpenSSF model signing): {signature}")
    elif model_signature is not None:
        raise BadInput("--model-signature goes with --model-signing-key")
