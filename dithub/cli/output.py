"""Rendering for people (rich) and machines (--json); errors; progress bars."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..progress import Advance, ProgressFactory, no_progress

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
SHOW_AFTER_SECONDS = 0.5


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and sets as plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")


def emit(as_json: bool, payload: Any, human: Callable[[], None]) -> None:
    """Print ``payload`` as JSON, or call ``human`` to render it for people."""
    if as_json:
        print_json(payload)
    else:
        human()


def lines(texts: Iterable[str], empty: str | None = None) -> Callable[[], None]:
    """A renderer for ``emit`` that prints each text on its own line (``empty`` when there is none)."""

    def render() -> None:
        printed = False
        for text in texts:
            out.print(text)
            printed = True
        if not printed and empty:
            out.print(empty)

    return render


def error_line(message: str) -> None:
    err.print(f"[bold red]error:[/] [red]{escape(message)}[/]")


def short(oid: str | None) -> str:
    return oid[:12] if oid else "-"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


@contextmanager
def progress_bars() -> Iterator[ProgressFactory]:
    """A ``ProgressFactory`` drawing rich bars on stderr once a task runs past half a second (none
    where stderr is no terminal: CI loops then do not even load rich's progress module). Tasks in
    bytes show sizes and speed; others count their unit (``3/12 tensors``)."""
    if not err.is_terminal:
        yield no_progress
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    from rich.text import Text

    class Amount(ProgressColumn):
        """Bytes as sizes and a speed; anything else as done/total and its unit."""

        def __init__(self) -> None:
            super().__init__()
            self.size, self.speed = DownloadColumn(), TransferSpeedColumn()

        def render(self, task: Task) -> Text:
            unit = task.fields.get("unit", "bytes")
            if unit == "bytes":
                return Text.assemble(self.size.render(task), " ", self.speed.render(task))
            total = f"/{int(task.total)}" if task.total else ""
            return Text(f"{int(task.completed)}{total} {unit}", style="progress.download")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), Amount(), TimeRemainingColumn(),
                        console=err, transient=True)
    started = [False]
    t0 = time.monotonic()

    def factory(description: str, total: int, unit: str = "bytes") -> Advance:
        task = progress.add_task(description, total=total or None, unit=unit)

        def advance(n: int) -> None:
            progress.advance(task, n)
            if not started[0] and time.monotonic() - t0 > SHOW_AFTER_SECONDS:
                started[0] = True
                progress.start()

        return advance

    try:
        yield factory
    finally:
        if started[0]:
            progress.stop()


def signature_line(check: Any) -> str:
    """A commit's signature check (``ops.sign.SignatureCheck``) as one coloured line."""
    from rich.markup import escape

    if check.status == "good":
        return f"[green]good signature by {escape(', '.join(check.principals))}[/] ({escape(_fingerprint(check.key))})"
    if check.status == "untrusted":
        return f"[yellow]signature by an untrusted key {escape(_fingerprint(check.key))}: {escape(check.detail)}[/]"
    if check.status == "bad":
        return f"[red]BAD signature: {escape(check.detail)}[/]"
    return "[dim]unsigned[/]"


def _fingerprint(key: str | None) -> str:
    """``SHA256:…`` of an SSH public key line, as ssh-keygen prints it."""
    import base64
    import hashlib

    if not key:
        return "?"
    kind, blob = key.split()[:2]
    return f"{kind} SHA256:{base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode().rstrip('=')}"
