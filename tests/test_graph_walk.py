"""store.graph: the one walk over the object graph, and the completeness check (issue 19)."""
from __future__ import annotations

from dithub.store import Commit, MemoryObjectStore, Op, TensorEntry, Tree
from dithub.store.graph import commits, complete, walk


def _repo_objects():
    store = MemoryObjectStore()
    t1 = store.write_tensor("F32", (2,), b"\0" * 8)
    t2 = store.write_tensor("F32", (1,), b"\1" * 4)
    base = store.write_tree(Tree("full", {}, {"w": TensorEntry(t2, "F32", (1,))}))
    tree = store.write_tree(Tree("task_vector", {}, {"a": TensorEntry(t1, "F32", (2,))}))
    c1 = store.write_commit(Commit(tree, [], base, "me", 0.0, "one", Op()))
    c2 = store.write_commit(Commit(tree, [c1], base, "me", 1.0, "two", Op()))
    return store, dict(t1=t1, t2=t2, base=base, tree=tree, c1=c1, c2=c2)


def _read(store):
    return lambda ids: {i: store.read_buffer(i) for i in ids if store.contains(i)}


def test_walk_reaches_every_object_once_and_reads_no_tensor():
    store, ids = _repo_objects()
    read: list[str] = []

    def read_many(wanted):
        read.extend(wanted)
        return _read(store)(wanted)

    seen = [v.link.id for v in walk(commits([ids["c2"]]), read_many)]
    assert sorted(seen) == sorted(ids.values()) and len(seen) == len(set(seen))
    assert ids["t1"] not in read and ids["t2"] not in read
    without_base = {v.link.id for v in walk(commits([ids["c2"]]), _read(store), with_base=False)}
    assert without_base == set(ids.values()) - {ids["base"], ids["t2"]}


def test_walk_stops_at_what_is_skipped_and_reports_what_is_missing():
    store, ids = _repo_objects()
    seen = {v.link.id for v in walk(commits([ids["c2"]]), _read(store), skip=lambda oid: oid == ids["c1"])}
    assert ids["c1"] not in seen and ids["tree"] in seen
    gone = {ids["tree"]}
    visits = list(walk(commits([ids["c2"]]), lambda w: {i: d for i, d in _read(store)(w).items() if i not in gone}))
    assert [v.link.id for v in visits if v.missing] == [ids["tree"]]
    assert ids["t1"] not in {v.link.id for v in visits}  # nothing below a missing tree


def test_complete_is_false_below_a_gap_and_terminates_on_a_forged_cycle():
    names = {"a": ["b"], "b": ["c"], "c": []}
    memo: dict[str, bool] = {}
    order: list[str] = []
    assert complete("a", names.__getitem__, lambda o: True, memo, order.append) and order == ["c", "b", "a"]
    assert not complete("a", names.__getitem__, lambda o: o != "c", {})
    cycle = {"x": ["y"], "y": ["x"]}
    assert not complete("x", cycle.__getitem__, lambda o: True, {})


def test_a_store_in_memory_receives_a_downloaded_object_only_if_it_hashes_and_passes_the_check(tmp_path):
    """BaseObjectStore.receive (what a fetch uses for large objects, on any store: issue 19)."""
    import pytest

    from dithub.errors import CorruptObject
    from dithub.store.ids import object_id

    store = MemoryObjectStore()
    source = MemoryObjectStore()
    oid = source.write_tensor("F32", (3,), b"\1" * 12)
    data = bytes(source.read_buffer(oid))
    seen = []
    store.receive(oid, lambda path: path.write_bytes(data), len(data), lambda head, total: seen.append(total))
    assert store.contains(oid) and bytes(store.read_buffer(oid)) == data and seen == [len(data)]
    other = MemoryObjectStore()
    with pytest.raises(CorruptObject):
        other.receive(oid, lambda path: path.write_bytes(data[:-1] + b"\0"))
    def refuse(head, total):
        raise ValueError("not this one")
    with pytest.raises(ValueError):
        other.receive(oid, lambda path: path.write_bytes(data), check=refuse)
    assert not other.contains(oid) and object_id(data) == oid


def test_a_root_that_is_neither_commit_tree_nor_tag_is_named_as_such():
    import pytest

    from dithub.errors import CorruptObject
    from dithub.store.graph import objects

    store, ids = _repo_objects()
    with pytest.raises(CorruptObject, match="is a tensor, where a commit, tree or tag was expected"):
        list(walk(objects([ids["t1"]]), _read(store)))
    assert {v.link.kind for v in walk(objects([ids["tree"], ids["c1"]]), _read(store)) if v.via is None} == {"tree", "commit"}
