"""Refs: compare-and-swap, symbolic HEAD, reflogs, names, stale locks (disk and memory)."""
from __future__ import annotations

import os
import time

import pytest

from dithub.errors import BadInput, RefConflict
from dithub.store import DiskRefStore, MemoryRefStore, check_ref_name

A, B, C = "a" * 32, "b" * 32, "c" * 32


class RefStoreTests:
    """Each concrete subclass provides ``make(tmp_path)``."""

    def test_create_update_and_conflict(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/class/dog", None, A, "first")
        refs.set_if_equals("refs/heads/class/dog", A, B, "second")
        with pytest.raises(RefConflict, match="expected a{32}"):
            refs.set_if_equals("refs/heads/class/dog", A, C, "stale writer")
        assert refs.resolve("refs/heads/class/dog") == B
        log = refs.reflog("refs/heads/class/dog")
        assert [(e.old, e.new, e.message) for e in log] == [(None, A, "first"), (A, B, "second")]

    def test_create_fails_if_it_exists(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/tags/v1", None, A, "t")
        with pytest.raises(RefConflict):
            refs.set_if_equals("refs/tags/v1", None, B, "t")

    def test_symbolic_head_follows_branch(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_symbolic("HEAD", "refs/heads/main")
        assert refs.resolve("HEAD") is None
        refs.set_if_equals("HEAD", None, A, "through HEAD")
        assert refs.resolve("refs/heads/main") == A
        assert refs.read_raw("HEAD") == "ref: refs/heads/main"
        refs.set_detached("HEAD", B)
        assert refs.resolve("HEAD") == B and refs.resolve("refs/heads/main") == A

    def test_names_and_delete(self, tmp_path):
        refs = self.make(tmp_path)
        for n in ("refs/heads/main", "refs/heads/class/dog", "refs/tags/v1"):
            refs.set_if_equals(n, None, A, "x")
        assert refs.names("refs/heads/") == ["refs/heads/class/dog", "refs/heads/main"]
        refs.delete("refs/heads/class/dog", A)
        assert refs.names("refs/heads/") == ["refs/heads/main"]
        assert refs.reflog("refs/heads/class/dog") == []


class TestMemoryRefs(RefStoreTests):
    def make(self, tmp_path):
        return MemoryRefStore()


class TestDiskRefs(RefStoreTests):
    def make(self, tmp_path):
        return DiskRefStore(tmp_path)

    def test_held_lock_is_a_conflict(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/main", None, A, "x")
        fd, _lock = refs._acquire("refs/heads/main")  # another writer holds it
        try:
            with pytest.raises(RefConflict, match="locked"):
                refs.set_if_equals("refs/heads/main", A, B, "y")
        finally:
            os.close(fd)

    def test_stale_lock_of_a_killed_writer_is_broken(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/main", None, A, "x")
        lock = tmp_path / "refs/heads/main.lock"
        lock.write_text("half")  # no process holds it
        old = time.time() - 60
        os.utime(lock, (old, old))
        refs.set_if_equals("refs/heads/main", A, B, "after crash")
        assert refs.resolve("refs/heads/main") == B and not lock.exists()

    def test_fresh_unheld_lock_is_respected(self, tmp_path):
        refs = self.make(tmp_path)
        (tmp_path / "refs/heads").mkdir(parents=True)
        (tmp_path / "refs/heads/main.lock").write_text("")
        with pytest.raises(RefConflict):
            refs.set_if_equals("refs/heads/main", None, A, "x")

    def test_torn_reflog_line_does_not_swallow_the_next(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/main", None, A, "one")
        with open(tmp_path / "logs/refs/heads/main", "a") as f:
            f.write('{"old": "aaa')  # a crash mid-append
        refs.set_if_equals("refs/heads/main", A, B, "two")
        assert [e.message for e in refs.reflog("refs/heads/main")] == ["one", "two"]

    def test_branch_and_folder_of_same_name(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/class", None, A, "x")
        with pytest.raises(BadInput, match="refs/heads/class/dog"):
            refs.set_if_equals("refs/heads/class/dog", None, A, "x")


@pytest.mark.parametrize("name", ["a..b", "has space", "end/", "/start", "x.lock", ".hidden", "a//b", "q?", "t~1", "a^", "c:d", "@{u}", ""])
def test_bad_ref_names(name):
    with pytest.raises(BadInput):
        check_ref_name(name)


@pytest.mark.parametrize("name", ["main", "class/dog", "domain/aerial-v2", "client/3", "v1.0"])
def test_good_ref_names(name):
    check_ref_name(name)
