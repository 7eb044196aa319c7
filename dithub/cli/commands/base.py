"""dithub base add|list"""
from __future__ import annotations

from typing import Annotated, Any

import typer

from ..options import Json
from ..output import emit, lines, human_bytes, out, progress_bars, short
from ..state import repo as open_repo

app = typer.Typer(help="Named base checkpoints the adapters belong to.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the base, e.g. vit-v2.")],
    path: Annotated[str, typer.Argument(help="A Hugging Face model directory (config.json + safetensors): a path, or "
                                             "hf://org/name[@revision] (from the Hugging Face cache).")],
) -> None:
    """Register a model checkpoint as a named base."""
    repo = open_repo(ctx)
    with progress_bars() as progress:
        res = repo.base_add(name, path, progress=progress)
    out.print(f"Base {name} at {short(res.id)}: {human_bytes(res.total_bytes)}, {res.new_objects} new objects")


@app.command("list")
def list_(ctx: typer.Context, as_json: Json = False) -> None:
    """List the named bases."""
    repo = open_repo(ctx)
    rows: dict[str, dict[str, Any]] = {}
    for name, oid in repo.bases().items():
        commit = repo.store.read_commit(oid)
        tree = repo.store.read_tree(commit.tree)
        rows[name] = {"commit": oid, "tree": commit.tree, "tensors": len(tree.tensors), "bytes": tree.nbytes,
                      "model_type": tree.config.get("model_type")}
    emit(as_json, rows, lines((f"{n}  [yellow]{short(r['commit'])}[/]  {r['model_type'] or ''} {r['tensors']} tensors, "
                               f"{human_bytes(r['bytes'])}" for n, r in rows.items()),
                              "No bases yet (add one with `dithub base add NAME MODEL_DIR`)"))
