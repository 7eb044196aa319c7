"""dithub show"""
from __future__ import annotations

import datetime as dt

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..options import Json, Rev
from ..output import emit, human_bytes, out, short, signature_line
from ..state import repo as open_repo


def show(ctx: typer.Context, rev: Rev = "HEAD",
         recipe: Annotated[bool, typer.Option("--recipe", help="Print a merge commit as a mergekit recipe (YAML).")] = False,
         as_json: Json = False) -> None:
    """Show a commit: metadata, how it was made, and its tensors."""
    repo = open_repo(ctx)
    if recipe:
        import yaml  # 14 ms: only for the recipe, not at every command's start

        doc = repo.recipe(rev)
        emit(as_json, doc, lambda: out.print(escape(yaml.safe_dump(doc, sort_keys=False)), end=""))
        return
    info = repo.show(rev)
    c, tree = info.commit, info.tree
    signature = repo.signature(info.id)
    payload = {
        "id": info.id, "refs": info.refs, "tree": c.tree, "parents": c.parents, "base": c.base,
        "base_name": info.base, "author": c.author, "time": c.time, "message": c.message, "op": c.op.to_json(),
        "kind": tree.kind, "config": tree.config, "bytes": tree.nbytes,
        "tensors": {n: e.to_json() for n, e in tree.tensors.items()}, "signature": signature.to_json(),
    }

    def human() -> None:
        deco = f" ({', '.join(info.refs)})" if info.refs else ""
        out.print(f"[yellow]commit {info.id}[/]{deco}")
        if c.parents:
            out.print("Parents: " + " ".join(short(p) for p in c.parents))
        out.print(f"Author:  {escape(c.author)}\nDate:    {dt.datetime.fromtimestamp(c.time):%Y-%m-%d %H:%M:%S}")
        if c.signature is not None:
            out.print(f"Signer:  {signature_line(signature)}")
        out.print(f"Kind:    {tree.kind}, {len(tree.tensors)} tensors, {human_bytes(tree.nbytes)}; base: {info.base or 'none'}")
        if "hub" in c.op.params:
            out.print(escape(f"Source:  hf://{c.op.params['hub']}@{c.op.params['revision']}"))
        if c.op.name != "commit":
            out.print(f"Op:      {c.op.name} {c.op.method or ''} {c.op.params or ''} inputs={[short(i) for i in c.op.inputs]}")
        out.print(f"\n    {escape(c.message)}\n")
        table = Table("tensor", "dtype", "shape", "id", box=None)
        table.columns[0].overflow = "fold"  # a long name wraps whole: its end is what tells tensors apart
        for name, e in tree.tensors.items():
            table.add_row(escape(name), e.dtype, "x".join(map(str, e.shape)) or "scalar", short(e.id))
        out.print(table)

    emit(as_json, payload, human)
