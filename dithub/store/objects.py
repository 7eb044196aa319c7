"""The three object kinds (tensor, tree, commit) and their canonical bytes.

Every object starts with its type tag, so ids of different kinds never collide and ``fsck`` can
parse any object on its own:

* tensor: ``tensor {"dtype":..,"shape":[..]}<spaces>\\n`` then raw little-endian bytes; the header
  is padded so the data starts on a 64-byte boundary (zero-copy loads via mmap).
* tree: ``tree\\n`` + canonical JSON ``{kind, config, tensors}``.
* commit: ``commit\\n`` + canonical JSON ``{tree, parents, base, author, time, message, op}``.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any

from ..errors import CorruptObject
from .ids import Buffer, ObjectId, canonical_json, is_object_id

DTYPE_SIZES: dict[str, int] = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""Item size of each dtype, named as safetensors names them."""

TREE_KINDS = ("lora", "task_vector", "full", "peft", "probe")
"""``probe``: the data an op measured on (a probe set's ``inputs`` and ``labels``), named by a commit's
``op.data``; never a commit's own tree."""
ALIGN = 64
_TENSOR_TAG = b"tensor "
_TREE_TAG = b"tree\n"
_COMMIT_TAG = b"commit\n"
_BLOB_TAG = b"blob\n"
_TAG_TAG = b"tag\n"
MAX_HEADER = 1 << 20
MAX_NDIM = 32
MAX_TREE_ENTRIES = 1 << 20
"""A tree names at most this many tensors (the largest checkpoints have tens of thousands)."""
MAX_PARENTS = 1024
MAX_JSON_BYTES = 256 << 20
"""A tree or commit is at most this large (a tree of MAX_TREE_ENTRIES entries fits)."""
MAX_BLOB_BYTES = MAX_JSON_BYTES
"""A blob (a file a tree keeps: config, tokenizer, a shard's header) is at most this large."""
MAX_FILES = 10_000
MAX_SIGNATURE_CHARS = 64 << 10
"""A commit's signature is at most this long (an SSH signature by an RSA-16384 key is under 4 KiB)."""
_FILE_NAME = re.compile(r"[A-Za-z0-9._+@=-]+(/[A-Za-z0-9._+@=-]+){0,7}")


def nbytes_of(dtype: str, shape: Sequence[int]) -> int:
    """Bytes of a tensor of ``dtype`` and ``shape``."""
    return DTYPE_SIZES[dtype] * math.prod(shape)


def tensor_header(dtype: str, shape: Sequence[int]) -> bytes:
    """The canonical header of a tensor object, padded to ``ALIGN`` bytes."""
    if dtype not in DTYPE_SIZES:
        raise ValueError(f"unknown dtype {dtype!r}")
    body = _TENSOR_TAG + canonical_json({"dtype": dtype, "shape": [int(d) for d in shape]})
    padded = -(-(len(body) + 1) // ALIGN) * ALIGN
    return body + b" " * (padded - len(body) - 1) + b"\n"


def tensor_parts(dtype: str, shape: Sequence[int], data: Buffer) -> list[Buffer]:
    """A tensor object as the parts whose concatenation it is: its header, then its raw bytes."""
    return [tensor_header(dtype, shape), data]


def parse_tensor_header(oid: ObjectId, buf: bytes | memoryview, total: int | None = None) -> tuple[str, tuple[int, ...], int]:
    """(dtype, shape, data offset) of a tensor object, its size checked (``buf`` may be a prefix
    holding the header when ``total`` gives the object's size)."""
    total = len(buf) if total is None else total
    if bytes(buf[: len(_TENSOR_TAG)]) != _TENSOR_TAG:
        raise CorruptObject(f"object {oid} is not a tensor")
    end = bytes(buf[: min(len(buf), MAX_HEADER)]).find(b"\n")
    if end < 0:
        raise CorruptObject(f"tensor object {oid} has no header end")
    try:
        head = json.loads(bytes(buf[len(_TENSOR_TAG) : end]))
        dtype, shape = head["dtype"], check_shape(head["shape"])
        expected = nbytes_of(dtype, shape)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CorruptObject(f"tensor object {oid} has a malformed header: {exc}") from None
    if total - (end + 1) != expected:
        raise CorruptObject(f"tensor object {oid} holds {total - end - 1} data bytes, header says {expected}")
    return dtype, shape, end + 1


def check_shape(value: Any) -> tuple[int, ...]:
    """A shape: at most MAX_NDIM non-negative integers (ValueError otherwise)."""
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise ValueError(f"shape must be a list of at most {MAX_NDIM} sizes")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ValueError(f"shape {value[:MAX_NDIM]!r} has a size that is not a non-negative integer")
    return tuple(value)


@dataclass(frozen=True)
class TensorEntry:
    """A tree's record of one tensor."""

    id: ObjectId
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class FileEntry:
    """A file a tree keeps beside its tensors, so a model directory comes back byte for byte: its
    bytes as one ``blob``, or, for a safetensors file, its ``header`` (a blob) and the ``tensors``
    its data section holds, in order (their bytes are the tensors' own: they dedup)."""

    blob: ObjectId | None = None
    header: ObjectId | None = None
    tensors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"blob": self.blob} if self.blob is not None else {"header": self.header, "tensors": list(self.tensors)}


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file of a tree (a relative path of plain components), or None."""
    if not isinstance(name, str) or len(name.encode()) > 1024 or not _FILE_NAME.fullmatch(name):
        return "it is not a relative path of letters, digits and ._+@=-"
    return "it has a '.' or '..' component" if any(part in (".", "..") for part in name.split("/")) else None


@dataclass(frozen=True)
class Tree:
    """An adapter (``lora``, ``task_vector``) or a checkpoint (``full``: a base, or a fine-tune of
    one), and the files it keeps (``files``: none for trees made before they existed)."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, TensorEntry]
    files: dict[str, FileEntry] = field(default_factory=dict)
    names: dict[str, str] | None = None
    """A base's tensors as the loaded model names them, where that differs from the checkpoint
    (computed once, at ``base add``; None: not recorded, as bases added before)."""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"kind": self.kind, "config": self.config, "tensors": {k: v.to_json() for k, v in self.tensors.items()}}
        if self.files:  # absent otherwise: a tree without files (or names) has the id it always had
            body["files"] = {name: f.to_json() for name, f in self.files.items()}
        if self.names is not None:
            body["names"] = self.names
        return _TREE_TAG + canonical_json(body)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


@dataclass(frozen=True)
class Op:
    """How a commit was made: enough to recompute it."""

    name: str = "commit"
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[ObjectId] = field(default_factory=list)
    data: list[ObjectId] = field(default_factory=list)
    """Trees the op read besides its inputs (the probe sets an activation merge measured on): edges
    of the graph, so they are kept, fetched and pushed with the commit, and a replay finds them."""

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "method": self.method, "params": self.params, "inputs": self.inputs}
        return {**out, "data": self.data} if self.data else out  # commits without data keep their bytes


@dataclass(frozen=True)
class Commit:
    """A node of the history DAG."""

    tree: ObjectId
    parents: list[ObjectId]
    base: ObjectId | None
    author: str
    time: float
    message: str
    op: Op = field(default_factory=Op)
    signature: str | None = None
    """An armored SSH signature of ``payload()`` (issue 26): it covers the tree, which names every
    tensor by its id. Absent from the bytes of an unsigned commit, which keeps the id it had."""

    def encode(self) -> bytes:
        body = {"tree": self.tree, "parents": self.parents, "base": self.base, "author": self.author,
                "time": self.time, "message": self.message, "op": self.op.to_json()}
        return _COMMIT_TAG + canonical_json({**body, "signature": self.signature} if self.signature is not None else body)

    def payload(self) -> bytes:
        """What a signature signs: the commit's bytes without its signature."""
        return replace(self, signature=None).encode()


@dataclass(frozen=True)
class Tag:
    """An annotated tag (issue 26): a commit, named and described by a tagger, optionally signed;
    ``refs/tags/NAME`` points at it (a lightweight tag points at the commit itself)."""

    object: ObjectId
    name: str
    tagger: str
    time: float
    message: str
    signature: str | None = None

    def encode(self) -> bytes:
        body = {"object": self.object, "type": "commit", "tag": self.name, "tagger": self.tagger, "time": self.time,
                "message": self.message}
        return _TAG_TAG + canonical_json({**body, "signature": self.signature} if self.signature is not None else body)

    def payload(self) -> bytes:
        """What a signature signs: the tag's bytes without its signature."""
        return replace(self, signature=None).encode()


def decode_tag(oid: ObjectId, data: bytes) -> Tag:
    """Parse a tag object's bytes."""
    value = _load_json(oid, data, _TAG_TAG, "tag")
    try:
        signature = value.get("signature")
        if not is_object_id(value["object"]) or value.get("type") != "commit" or not isinstance(value["tag"], str):
            raise ValueError("it names no commit")
        if signature is not None and (not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS):
            raise ValueError("its signature is not a string of at most 64 KiB")
        return Tag(value["object"], value["tag"], str(value["tagger"]), float(value["time"]), str(value["message"]), signature)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptObject(f"tag object {oid} is malformed: {exc}") from None


def object_type(data: bytes | memoryview) -> str:
    """``tensor``, ``tree``, ``commit``, ``blob``, ``tag`` or ``unknown`` from the type tag."""
    head = bytes(data[:8])
    tags = (("tensor", _TENSOR_TAG), ("tree", _TREE_TAG), ("commit", _COMMIT_TAG), ("blob", _BLOB_TAG), ("tag", _TAG_TAG))
    return next((kind for kind, tag in tags if head.startswith(tag)), "unknown")


def blob_parts(data: Buffer) -> list[Buffer]:
    """A blob object as the parts whose concatenation it is: its tag, then the file's bytes."""
    return [_BLOB_TAG, data]


def blob_data(oid: ObjectId, data: bytes | memoryview) -> memoryview:
    """The file bytes of blob object ``data`` (CorruptObject for another kind, or one over the limit)."""
    if bytes(data[: len(_BLOB_TAG)]) != _BLOB_TAG:
        raise CorruptObject(f"object {oid} is not a blob", f"it is a {object_type(data)}")
    if len(data) > MAX_BLOB_BYTES + len(_BLOB_TAG):
        raise CorruptObject(f"blob object {oid} is {len(data)} bytes, over the limit of {MAX_BLOB_BYTES}")
    return memoryview(data)[len(_BLOB_TAG):]


def _load_json(oid: ObjectId, data: bytes, tag: bytes, what: str) -> dict[str, Any]:
    if not data.startswith(tag):
        raise CorruptObject(f"object {oid} is not a {what}", f"it is a {object_type(data)}")
    if len(data) > MAX_JSON_BYTES:
        raise CorruptObject(f"{what} object {oid} is {len(data)} bytes, over the limit of {MAX_JSON_BYTES}")
    try:
        value = json.loads(data[len(tag) :])
    except RecursionError:
        raise CorruptObject(f"{what} object {oid} is malformed: nested too deeply") from None
    except ValueError as exc:
        raise CorruptObject(f"{what} object {oid} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptObject(f"{what} object {oid} is not a JSON object")
    return value


def decode_tree(oid: ObjectId, data: bytes) -> Tree:
    """Parse a tree object's bytes."""
    value = _load_json(oid, data, _TREE_TAG, "tree")
    try:
        if len(value["tensors"]) > MAX_TREE_ENTRIES:
            raise ValueError(f"{len(value['tensors'])} entries, over the limit of {MAX_TREE_ENTRIES}")
        tensors = {name: TensorEntry(e["id"], e["dtype"], check_shape(e["shape"])) for name, e in value["tensors"].items()}
        names = value.get("names")
        if names is not None and (not isinstance(names, dict) or any(k not in tensors or not isinstance(v, str) for k, v in names.items())):
            raise ValueError("its names must map its tensors to strings")
        tree = Tree(value["kind"], value["config"], tensors, _files(value.get("files", {}), tensors), names)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CorruptObject(f"tree object {oid} is malformed: {exc}") from None
    bad = [n for n, e in tensors.items() if not isinstance(e.id, str) or not is_object_id(e.id) or e.dtype not in DTYPE_SIZES]
    if tree.kind not in TREE_KINDS or bad or not isinstance(tree.config, dict):
        raise CorruptObject(f"tree object {oid} is malformed (kind {tree.kind!r}, bad entries {bad[:3]})")
    return tree


def _files(value: Any, tensors: dict[str, TensorEntry]) -> dict[str, FileEntry]:
    """A tree's ``files``, checked: safe names, object ids, shard tensors the tree holds (ValueError)."""
    if not isinstance(value, dict) or len(value) > MAX_FILES:
        raise ValueError(f"its files must be an object of at most {MAX_FILES} entries")
    out = {}
    for name, e in value.items():
        if problem := file_name_problem(name):
            raise ValueError(f"file name {name!r}: {problem}")
        if not isinstance(e, dict) or set(e) not in ({"blob"}, {"header", "tensors"}):
            raise ValueError(f"file {name!r} must be a blob or a header with its tensors")
        ids = [e.get("blob") or e.get("header")]
        if not all(isinstance(i, str) and is_object_id(i) for i in ids):
            raise ValueError(f"file {name!r} names {ids[0]!r}, which is not an object id")
        order = e.get("tensors", [])
        if not isinstance(order, list) or any(not isinstance(t, str) or t not in tensors for t in order):
            raise ValueError(f"file {name!r} names no tensor {next(iter(order), None)!r} of the tree")
        out[name] = FileEntry(e.get("blob"), e.get("header"), tuple(order))
    return out


def decode_commit(oid: ObjectId, data: bytes) -> Commit:
    """Parse a commit object's bytes."""
    value = _load_json(oid, data, _COMMIT_TAG, "commit")
    try:
        op = value.get("op") or {}
        read = op.get("data", [])
        if not isinstance(read, list):
            raise ValueError("its op data is not a list")
        ids = [value["tree"], *value["parents"], *read] + ([value["base"]] if value.get("base") is not None else [])
        if len(value["parents"]) > MAX_PARENTS or len(read) > MAX_PARENTS or not all(isinstance(i, str) and is_object_id(i) for i in ids):
            raise ValueError("its tree, parents, op data or base are not object ids")
        signature = value.get("signature")
        if signature is not None and (not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS):
            raise ValueError("its signature is not a string of at most 64 KiB")
        return Commit(value["tree"], list(value["parents"]), value.get("base"), value["author"], float(value["time"]),
                      value["message"], Op(op.get("name", "commit"), op.get("method"), op.get("params", {}), op.get("inputs", []),
                                           list(read)), signature)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptObject(f"commit object {oid} is malformed: {exc}") from None


@dataclass(frozen=True)
class Link:
    """One object naming another: the kind it must be (and, for a tensor, its dtype and shape)."""

    id: ObjectId
    kind: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    optional: bool = False
    """A commit's base: a selective fetch may leave it out."""
    name: str = ""
    """How the referrer names it, for messages: a tree's tensor name, ``base`` or ``parent``."""


def inspect(oid: ObjectId, data: bytes | memoryview, *, with_base: bool = True) -> tuple[str, str | None, tuple[int, ...] | None, list[Link]]:
    """(kind, dtype, shape, what it names) of the object ``data``, parsed and checked in one pass
    (CorruptObject when it does not parse); dtype and shape for tensors only. This is the one
    definition of the object graph's edges: a commit names its tree, its parents and (unless
    ``with_base`` is False) its base checkpoint, and the trees its op read (``Op.data``); a tag its
    commit; a tree names its tensors and the blobs of its files;
    a tensor and a blob name nothing."""
    kind = object_type(data)
    if kind == "tensor":
        dtype, shape, _offset = parse_tensor_header(oid, data)
        return kind, dtype, shape, []
    if kind == "tree":
        tree = decode_tree(oid, bytes(data))
        files = [Link(f.blob, "blob", name=n) if f.blob else Link(f.header or "", "blob", name=f"{n} (header)")
                 for n, f in tree.files.items()]
        return kind, None, None, [Link(e.id, "tensor", e.dtype, e.shape, name=n) for n, e in tree.tensors.items()] + files
    if kind == "blob":
        blob_data(oid, data)
        return kind, None, None, []
    if kind == "tag":
        return kind, None, None, [Link(decode_tag(oid, bytes(data)).object, "commit", name="tagged")]
    if kind == "commit":
        c = decode_commit(oid, bytes(data))
        named = ([Link(c.tree, "tree", name="tree")] + [Link(p, "commit", name="parent") for p in c.parents]
                 + [Link(d, "tree", name="op data") for d in c.op.data])
        return kind, None, None, named + ([Link(c.base, "tree", optional=True, name="base")] if c.base and with_base else [])
    raise CorruptObject(f"object {oid} is of no known kind")
