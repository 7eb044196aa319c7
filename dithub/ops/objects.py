"""``cat-file``: any stored object as a person or a script reads it — a commit's fields, a tree's
entries, a tensor's header and a summary of its values, a blob's bytes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadInput, ObjectNotFound, RefNotFound
from ..formats.numpy_io import to_float64
from ..store import ObjectId, is_object_id
from ..store.objects import object_type
from ..store.view import RepoView

PREVIEW = 8
"""Values of a tensor shown."""


@dataclass(frozen=True)
class ObjectView:
    id: ObjectId
    kind: str
    size: int
    fields: dict[str, Any]
    """What the object holds, as JSON-ready values."""
    data: bytes = b""
    """A blob's bytes."""


def object_id_of(repo: RepoView, text: str) -> ObjectId:
    """A full object id, or a revision (a commit)."""
    if is_object_id(text) and repo.store.contains(text):
        return text
    try:
        return repo.resolve(text)
    except RefNotFound:
        raise ObjectNotFound(f"no object or revision {text!r}", "give a full object id (see `dithub ls-tree`) or a revision") from None


def view(repo: RepoView, text: str) -> ObjectView:
    """The object ``text`` names (an object id or a revision), parsed and checked."""
    oid = object_id_of(repo, text)
    raw = repo.store.read_buffer(oid)
    kind, size = object_type(raw), len(raw)
    if kind == "commit":
        return ObjectView(oid, kind, size, _commit(repo, oid))
    if kind == "tree":
        tree = repo.store.read_tree(oid)
        fields: dict[str, Any] = {"tree_kind": tree.kind, "config": tree.config, "tensors": {n: e.to_json() for n, e in tree.tensors.items()},
                  "files": {n: f.to_json() for n, f in tree.files.items()}}
        return ObjectView(oid, kind, size, fields)
    if kind == "tensor":
        t = repo.store.read_tensor(oid)
        values = to_float64(t).reshape(-1)
        fields = {"dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes, "norm": float(np.linalg.norm(values)),
                  "first": [float(v) for v in values[:PREVIEW]]}
        return ObjectView(oid, kind, size, fields)
    if kind == "blob":
        data = repo.store.read_blob(oid)
        return ObjectView(oid, kind, size, {"bytes": len(data)}, data)
    if kind == "tag":
        tag = repo.store.read_tag(oid)
        return ObjectView(oid, kind, size, {"object": tag.object, "tag": tag.name, "tagger": tag.tagger, "time": tag.time,
                                            "message": tag.message, "signed": tag.signature is not None})
    raise BadInput(f"object {oid} is of no known kind")


def _commit(repo: RepoView, oid: ObjectId) -> dict[str, Any]:
    c = repo.store.read_commit(oid)
    return {"tree": c.tree, "parents": c.parents, "base": c.base, "author": c.author, "time": c.time, "message": c.message,
            "op": c.op.to_json()}
