"""A three-stage streaming executor: load item k+1 while item k is computed and item k−1 is stored.

A merge streams a model tensor by tensor: read the N inputs (mmap, decode, copy to the device),
merge them, bring the result back and store it (hash, write, fsync). Run one after the other, the
device idles while the host reads and writes; here loading and storing run on their own threads,
each at most one item ahead of (or behind) the computation, so the copies overlap the compute and
memory holds at most three items' worth at once. ``depth=0`` runs the stages in order on the
calling thread (the reference, and what small jobs use).

The first exception from any stage stops the others and is raised on the calling thread; no stage
starts an item after that, and every thread has finished when ``stream`` returns or raises.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

K = TypeVar("K")

_DONE = object()


def stream(keys: Iterable[K], load: Callable[[K], Any], compute: Callable[[K, Any], Any], store: Callable[[K, Any], None],
           depth: int = 1, busy: dict[str, float] | None = None) -> None:
    """For each key in order: ``store(key, compute(key, load(key)))``, the three stages overlapped
    across consecutive keys when ``depth`` ≥ 1 (at most ``depth`` items waiting between stages).
    ``busy``, when given, accumulates each stage's working seconds under load/compute/store."""
    if busy is not None:
        load, compute, store = _timed(load, "load", busy), _timed(compute, "compute", busy), _timed(store, "store", busy)
    if depth <= 0:
        for key in keys:
            store(key, compute(key, load(key)))
        return
    loaded: queue.Queue = queue.Queue(maxsize=depth)
    computed: queue.Queue = queue.Queue(maxsize=depth)
    failed = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item: Any) -> bool:
        while not failed.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue) -> Any:
        while not failed.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return _DONE

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001  re-raised on the calling thread
                errors.append(exc)
                failed.set()
        return run

    def loader() -> None:
        for key in keys:
            if failed.is_set() or not put(loaded, (key, load(key))):
                return
        put(loaded, _DONE)

    def storer() -> None:
        while (item := get(computed)) is not _DONE:
            store(*item)

    threads = [threading.Thread(target=guarded(loader), name="dithub-load", daemon=True),
               threading.Thread(target=guarded(storer), name="dithub-store", daemon=True)]
    for t in threads:
        t.start()

    def computer() -> None:
        while (item := get(loaded)) is not _DONE:
            key, value = item
            if not put(computed, (key, compute(key, value))):
                return
        put(computed, _DONE)

    guarded(computer)()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _timed(fn: Callable[..., Any], stage: str, busy: dict[str, float]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            busy[stage] = busy.get(stage, 0.0) + time.perf_counter() - t0
    return run
