"""Global CLI state: where the repository is, and debug mode."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..repo import Repo


@dataclass
class State:
    directory: Path = Path(".")
    debug: bool = False


def repo(ctx: typer.Context) -> Repo:
    """Open the repository the command runs in (``-C DIR`` or the working directory)."""
    state: State = ctx.obj or State()
    return Repo.open(state.directory)
