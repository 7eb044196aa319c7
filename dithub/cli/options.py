"""Option and argument aliases shared by the commands."""
from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Rev = Annotated[str, typer.Argument(help="A branch, tag, base, commit id (or prefix), with optional ~N / ^N.")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing name.")]
