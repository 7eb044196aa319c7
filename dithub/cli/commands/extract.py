"""dithub extract"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import Json, Rev
from ..output import emit, out, progress_bars
from ..state import repo as open_repo


def extract(
    ctx: typer.Context,
    rev: Rev,
    rank: Annotated[int, typer.Option("--rank", "-r", help="The LoRA rank of every module (smaller layers keep their own).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The peft adapter directory to write.")],
    as_json: Json = False,
) -> None:
    """Extract a LoRA adapter from a fine-tune or a task vector (truncated SVD of each linear layer's update)."""
    with progress_bars() as progress:
        res = open_repo(ctx).extract(rev, rank, output, progress=progress)

    def human() -> None:
        for module, error in res.errors.items():
            out.print(f"  {module}: relative error {error:.4g}")
        for name, size in res.skipped.items():
            out.print(f"  [yellow]not extracted[/] {name}: not a linear layer's weight (‖Δ‖ = {size:.4g})")
        out.print(f"Wrote a rank-{res.rank} LoRA of {rev} to {res.path}: {len(res.errors)} modules, "
                  f"relative error {res.overall:.4g} overall")

    emit(as_json, {"path": str(res.path), "rank": res.rank, "errors": res.errors, "overall": res.overall,
                   "skipped": res.skipped}, human)
