"""Run a producer of byte chunks one step ahead of its consumer, on a thread.

Lets reading and hashing the next chunk overlap writing the current one.
The producer must not reuse a chunk's buffer until two more chunks have been
produced (``iter_tensor_bytes`` rotates three buffers for this).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items``, producing each next one on a background thread."""
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((_END, exc))

    worker = threading.Thread(target=produce, name="dithub-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)
