"""Where independent pieces of work run: here, one after another (``local``, the default), or as
tasks on a Ray cluster (``ray``: the cluster at ``RAY_ADDRESS``, or a local one started for the
command; ``ray=ADDRESS``: that one). dithub builds no scheduler of its own: Ray places the tasks,
retries one whose worker died, and moves shared inputs once through its object store.

A task is a top-level function ``fn(shared, item)``; ``shared`` (the repository's opener, a plan, a
prepared transport) is sent once per call, not once per task. Tasks write only content-addressed
objects, so a retried task writes the same bytes again; refs move on the driver, after every task
succeeded. The local path imports no Ray."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BadInput, DithubError

T = TypeVar("T")
R = TypeVar("R")
RETRIES = 3
"""How often Ray runs a task again whose worker died (a task that raises is not retried: it fails the same way)."""
KILL_ONCE = "DITHUB_TEST_KILL_ONCE"
"""A test hook: a folder; the first attempt of each task whose marker is not in it creates the marker
and kills its worker process (deterministic, so the retry is exercised without timing)."""


class Executor:
    """Runs ``fn(shared, item)`` for every item; results in the items' order."""

    name = "local"

    def map(self, fn: Callable[[Any, T], R], items: Sequence[T], shared: Any = None) -> list[R]:
        return [fn(shared, item) for item in items]


class RayExecutor(Executor):
    """Each item a Ray task (retried when its worker dies); the first failure stops the call."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BadInput("--executor ray needs Ray, which is not installed", "pip install 'dithub[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            where = address or os.environ.get("RAY_ADDRESS") or None
            try:
                ray.init(address=where, include_dashboard=False, log_to_driver=False, num_cpus=None if where else os.cpu_count() or 1)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BadInput(f"cannot reach the Ray cluster at {where}: {exc}", "check RAY_ADDRESS or --executor ray=ADDRESS") from None

    def map(self, fn: Callable[[Any, T], R], items: Sequence[T], shared: Any = None) -> list[R]:
        ray = self._ray
        shared_ref = ray.put(shared)
        kill = os.environ.get(KILL_ONCE)
        task = ray.remote(max_retries=RETRIES)(_run_task)
        torch = sys.modules.get("torch")  # (not imported for this: a driver without it sends work that needs none)
        threads = torch.get_num_threads() if torch is not None else None
        futures = [task.remote(fn, shared_ref, item, threads, f"{kill}/{i}" if kill else None) for i, item in enumerate(items)]
        try:
            return list(ray.get(futures))
        except ray.exceptions.RayTaskError as exc:
            for f in futures:
                ray.cancel(f)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, DithubError):
                raise cause from None
            raise BadInput(f"a Ray task failed: {type(cause).__name__}: {cause}", "nothing was committed; see the Ray logs") from None
        except ray.exceptions.RayError as exc:
            raise BadInput(f"the Ray cluster failed the work: {type(exc).__name__}", f"nothing was committed; {exc}") from None


def _run_task(fn: Callable[[Any, Any], Any], shared: Any, item: Any, threads: int | None, kill_marker: str | None) -> Any:
    """One task on a Ray worker, with the driver's number of torch threads (Ray gives workers one;
    a decomposition's rounding depends on it, so the result would not be the local one's bit for bit).
    ``kill_marker``: the test hook of ``KILL_ONCE``."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if kill_marker is not None and not Path(kill_marker).exists():
        Path(kill_marker).parent.mkdir(parents=True, exist_ok=True)
        Path(kill_marker).touch()
        os._exit(1)  # the worker dies mid-task: Ray runs the task again elsewhere
    return fn(shared, item)


def executor_for(spec: str | None) -> Executor:
    """``local`` (or None), ``ray``, or ``ray=ADDRESS``."""
    if spec in (None, "", "local"):
        return Executor()
    kind, _, address = str(spec).partition("=")
    if kind == "ray":
        return RayExecutor(address or None)
    raise BadInput(f"--executor {spec!r} is not local, ray or ray=ADDRESS")
