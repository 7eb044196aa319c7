"""dithub ls-tree"""
from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from ..options import Json, Rev
from ..output import emit, human_bytes, out
from ..state import repo as open_repo


def ls_tree(ctx: typer.Context, rev: Rev, as_json: Json = False) -> None:
    """List a commit's tensors (dtype, shape, object id, size) and kept files."""
    tree = open_repo(ctx).tree_of(rev)
    payload: dict[str, Any] = {"kind": tree.kind,
               "tensors": [{"name": n, "dtype": e.dtype, "shape": list(e.shape), "id": e.id, "bytes": e.nbytes}
                           for n, e in sorted(tree.tensors.items())],
               "files": [{"name": n, **f.to_json()} for n, f in sorted(tree.files.items())]}

    def human() -> None:
        for t in payload["tensors"]:
            shape = "x".join(map(str, t["shape"])) or "scalar"
            out.print(f"tensor {t['id']} {t['dtype']:>5} {shape:>14} {human_bytes(t['bytes']):>9}  {escape(t['name'])}")
        for f in payload["files"]:
            what = f"blob   {f['blob']}" if f.get("blob") else f"header {f['header']}"
            out.print(f"{what} {'':>30}  {escape(f['name'])}")

    emit(as_json, payload, human)
