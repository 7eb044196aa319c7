"""dithub kernels build"""
from __future__ import annotations

from typing import Annotated

import typer

from ...errors import KernelsUnavailable
from ..options import Json
from ..output import emit, out

app = typer.Typer(help="The compiled CPU merge kernels (built on first use otherwise).", no_args_is_help=True)


@app.command("build")
def build(
    force: Annotated[bool, typer.Option("--force", help="Build again even if a checked library is cached.")] = False,
    as_json: Json = False,
) -> None:
    """Build (or find, checked) the C merge kernels for this machine, so no merge waits for them."""
    from ...kernels import clib

    try:
        path = clib.build(force=force)
    except (OSError, RuntimeError) as exc:
        raise KernelsUnavailable(f"the C merge kernels cannot be built: {exc}",
                                 "install a C compiler (or set CC); merges run the plain torch kernels meanwhile") from None
    emit(as_json, {"library": str(path)}, lambda: out.print(f"C merge kernels ready: {path}"))
