"""dithub cat-file"""
from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from ..options import Json
from ..output import emit, out
from ..state import repo as open_repo


def cat_file(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="An object id (commit, tree, tensor, blob) or a revision.")],
    pretty: Annotated[bool, typer.Option("-p", help="Print the object for a person (the default).")] = True,
    kind: Annotated[bool, typer.Option("-t", help="Print only the object's kind.")] = False,
    size: Annotated[bool, typer.Option("-s", help="Print only the object's size in bytes.")] = False,
    as_json: Json = False,
) -> None:
    """Show any stored object: a commit's fields, a tree's entries, a tensor's header and first values, a blob."""
    obj = open_repo(ctx).object(name)
    if kind or size:
        emit(as_json, {"id": obj.id, "kind": obj.kind, "size": obj.size}, lambda: out.print(obj.kind if kind else str(obj.size)))
        return
    payload = {"id": obj.id, "kind": obj.kind, "size": obj.size, **obj.fields}
    if obj.kind == "blob":
        payload["text"] = obj.data.decode("utf-8", errors="replace")
    emit(as_json, payload, lambda: _pretty(obj.kind, obj.fields, obj.data))


def _pretty(kind: str, f: dict, data: bytes) -> None:
    if kind == "commit":
        out.print(f"tree {f['tree']}")
        for p in f["parents"]:
            out.print(f"parent {p}")
        if f["base"]:
            out.print(f"base {f['base']}")
        out.print(f"author {escape(f['author'])} {dt.datetime.fromtimestamp(f['time']):%Y-%m-%d %H:%M:%S}")
        out.print(f"op {escape(json.dumps(f['op'], sort_keys=True))}\n\n{escape(f['message'])}")
    elif kind == "tree":
        out.print(f"kind {f['tree_kind']}\nconfig {escape(json.dumps(f['config'], sort_keys=True))}")
        for n, e in sorted(f["tensors"].items()):
            out.print(f"tensor {e['id']} {e['dtype']} {e['shape']} {escape(n)}")
        for n, e in sorted(f["files"].items()):
            out.print(f"file {escape(n)} {escape(json.dumps(e, sort_keys=True))}")
    elif kind == "tag":
        out.print(f"object {f['object']}\ntag {escape(f['tag'])}\ntagger {escape(f['tagger'])} "
                  f"{dt.datetime.fromtimestamp(f['time']):%Y-%m-%d %H:%M:%S}" + ("\nsigned" if f["signed"] else "")
                  + f"\n\n{escape(f['message'])}")
    elif kind == "tensor":
        out.print(f"tensor {f['dtype']} {f['shape']}, {f['bytes']} bytes, norm {f['norm']:.6g}")
        out.print("first values: " + ", ".join(f"{v:.6g}" for v in f["first"]))
    else:
        try:
            sys.stdout.write(data.decode("utf-8"))
        except UnicodeDecodeError:
            out.print(f"{len(data)} bytes of binary data; first bytes: {data[:32].hex(' ')}")
