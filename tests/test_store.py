"""Object stores, written once and run against the disk and memory stores."""
from __future__ import annotations

import json
import os
import struct

import pytest
import xxhash

from dithub.errors import CorruptObject, ObjectNotFound
from dithub.store import Commit, DiskObjectStore, MemoryObjectStore, Op, TensorEntry, Tree
from dithub.store.objects import FileEntry, inspect


class ObjectStoreTests:
    """Each concrete subclass provides ``make(tmp_path)``."""

    def test_id_is_xxh3_128_of_the_bytes(self, tmp_path):
        store = self.make(tmp_path)
        data = b"tree\n{}"
        assert store.write(data) == xxhash.xxh3_128(data).hexdigest()
        assert store.read(store.write(data)) == data

    def test_tensor_object_layout(self, tmp_path):
        store = self.make(tmp_path)
        raw = struct.pack("<6f", *range(6))
        oid = store.write_tensor("F32", (2, 3), raw)
        blob = store.read(oid)
        head, _, data = blob.partition(b"\n")
        assert head.startswith(b'tensor {"dtype":"F32","shape":[2,3]}')
        assert len(head) + 1 == 64  # data starts on a 64-byte boundary
        assert data == raw
        assert oid == xxhash.xxh3_128(blob).hexdigest()
        t = store.read_tensor(oid)
        assert (t.dtype, t.shape, bytes(t.data)) == ("F32", (2, 3), raw)

    def test_same_bytes_stored_once(self, tmp_path):
        store = self.make(tmp_path)
        a, new_a = store.put([b"commit\n", b"{}"])
        b, new_b = store.put([b"commit\n{}"])
        assert a == b and new_a and not new_b
        assert list(store) == [a]

    def test_missing_object(self, tmp_path):
        with pytest.raises(ObjectNotFound, match="0" * 32):
            self.make(tmp_path).read("0" * 32)

    def test_tree_and_commit_round_trip_as_canonical_json(self, tmp_path):
        store = self.make(tmp_path)
        tid = store.write_tensor("F16", (2,), b"\x00\x3c\x00\x40")
        tree = Tree("lora", {"r": 4, "b": [1, 2]}, {"x": TensorEntry(tid, "F16", (2,))})
        t_oid = store.write_tree(tree)
        assert store.read(t_oid) == b"tree\n" + json.dumps(
            {"config": {"b": [1, 2], "r": 4}, "kind": "lora", "tensors": {"x": {"dtype": "F16", "id": tid, "shape": [2]}}},
            sort_keys=True, separators=(",", ":")).encode()
        assert store.read_tree(t_oid) == tree
        commit = Commit(t_oid, [], None, "me", 1.5, "msg", Op("merge", "ties", {"density": 0.2}, [tid]))
        assert store.read_commit(store.write_commit(commit)) == commit

    def test_a_blob_holds_a_file_byte_for_byte_and_a_tree_names_its_files(self, tmp_path):
        """Issue 20: a model directory's files (config, tokenizer, a shard's header) are blobs a
        tree names beside its tensors; a tree without files encodes as before (its id unchanged)."""
        store = self.make(tmp_path)
        raw = b'{"vocab": {"a": 0}}\n\x00\xff'
        bid = store.write_blob(raw)
        assert store.read(bid) == b"blob\n" + raw and store.read_blob(bid) == raw
        tid = store.write_tensor("F32", (1,), b"\0\0\x80\x3f")
        files = {"tokenizer.json": FileEntry(blob=bid), "model.safetensors": FileEntry(header=bid, tensors=("x",))}
        tree = Tree("full", {}, {"x": TensorEntry(tid, "F32", (1,))}, files)
        oid = store.write_tree(tree)
        assert store.read_tree(oid) == tree
        doc = json.loads(store.read(oid)[5:])
        assert doc["files"] == {"tokenizer.json": {"blob": bid}, "model.safetensors": {"header": bid, "tensors": ["x"]}}
        plain = Tree("full", {}, {"x": TensorEntry(tid, "F32", (1,))})
        assert "files" not in json.loads(store.read(store.write_tree(plain))[5:])
        names = {(link.id, link.kind, link.name) for link in inspect(oid, store.read(oid))[3]}
        assert names == {(tid, "tensor", "x"), (bid, "blob", "tokenizer.json"), (bid, "blob", "model.safetensors (header)")}
        with pytest.raises(CorruptObject, match="not a blob"):
            store.read_blob(tid)

    @pytest.mark.parametrize("files, why", [
        ({"../x": {"blob": "0" * 32}}, "file name"),
        ({"/etc/passwd": {"blob": "0" * 32}}, "file name"),
        ({"a\\b": {"blob": "0" * 32}}, "file name"),
        ({"x": {"blob": "nope"}}, "not an object id"),
        ({"x": {"header": "0" * 32, "tensors": ["missing"]}}, "names no tensor"),
        ({"x": {"blob": "0" * 32, "header": "0" * 32}}, "a blob or a header"),
        ([], "must be an object"),
    ])
    def test_a_tree_naming_unsafe_or_malformed_files_is_refused(self, tmp_path, files, why):
        store = self.make(tmp_path)
        body = {"kind": "full", "config": {}, "tensors": {}, "files": files}
        oid = store.write(b"tree\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        with pytest.raises(CorruptObject, match=why):
            store.read_tree(oid)

    def test_reading_a_tree_as_commit_fails(self, tmp_path):
        store = self.make(tmp_path)
        oid = store.write_tree(Tree("full", {}, {}))
        with pytest.raises(CorruptObject, match="not a commit"):
            store.read_commit(oid)


class TestMemoryObjectStore(ObjectStoreTests):
    def make(self, tmp_path):
        return MemoryObjectStore()


class TestDiskObjectStore(ObjectStoreTests):
    def make(self, tmp_path):
        return DiskObjectStore(tmp_path / "objects", tmp_path / "tmp")

    def test_loose_object_path_and_no_temp_left(self, tmp_path):
        store = self.make(tmp_path)
        oid = store.write(b"tree\n{}")
        assert (tmp_path / "objects" / oid[:2] / oid[2:]).is_file()
        assert list((tmp_path / "tmp").iterdir()) == []

    def test_flipped_byte_names_the_object(self, tmp_path):
        store = self.make(tmp_path)
        oid = store.write_tensor("F32", (4,), bytes(16))
        path = store.path(oid)
        os.chmod(path, 0o644)
        blob = bytearray(path.read_bytes())
        blob[-3] ^= 0x01
        path.write_bytes(bytes(blob))
        with pytest.raises(CorruptObject, match=oid):
            store.read_tensor(oid)

    def test_tensor_read_is_zero_copy_mmap(self, tmp_path):
        import mmap

        store = self.make(tmp_path)
        oid = store.write_tensor("U8", (1000,), bytes(range(250)) * 4)
        t = store.read_tensor(oid)
        assert isinstance(t.data.obj, mmap.mmap)
        assert not t.data.readonly  # private copy-on-write mapping: torch.frombuffer needs no copy
        t.data[0] = 99  # writes never reach the file
        assert store.read_tensor(oid).data[0] == 0


def test_put_many_reports_in_order_and_dedups_within_the_batch():
    store = MemoryObjectStore()
    done = []
    items = [(i, [b"tensor ", bytes([i % 3])]) for i in range(10)]
    store.put_many(items, lambda k, oid, new: done.append((k, new)))
    assert [k for k, _ in done] == list(range(10))
    assert [new for _, new in done] == [True] * 3 + [False] * 7
    assert len(list(store)) == 3


def test_put_many_propagates_a_failed_write():
    class Failing(MemoryObjectStore):
        def _store(self, oid, parts):
            if len(self._objects) == 2:
                raise OSError("disk full")
            super()._store(oid, parts)

    store = Failing()
    with pytest.raises(OSError, match="disk full"):
        store.put_many([(i, [bytes([i])]) for i in range(5)], lambda *a: None)
