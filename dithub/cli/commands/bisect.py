"""dithub bisect"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..options import Json
from ..output import emit, out
from ..state import repo as open_repo

if TYPE_CHECKING:
    from ...ops.bisect import Step


def bisect(
    ctx: typer.Context,
    good: Annotated[str, typer.Argument(help="The last commit known good.")],
    bad: Annotated[str, typer.Argument(help="A commit known bad, descending from GOOD through first parents.")],
    probe: Annotated[str | None, typer.Option("--probe", help="Score each commit on this probe (a .safetensors file or module:function).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="What --probe measures: accuracy, or module:function(model, probe) -> float.")] = "accuracy",
    min_accuracy: Annotated[float | None, typer.Option("--min-accuracy", help="Good: the metric is at least this.")] = None,
    max_drop: Annotated[float | None, typer.Option("--max-drop", help="Good: the metric is at most this below GOOD's.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Test each commit with this shell command (exit 0 good, 125 skip, else bad); "
                                                          "$DITHUB_BISECT_DIR holds the commit's adapter.")] = None,
    as_json: Json = False,
) -> None:
    """Find the commit that made it bad: a binary search on the first-parent path from GOOD to BAD."""
    def step(s: Step) -> None:
        if not as_json:
            out.print(f"{s.commit[:12]} is {s.verdict}{': ' + escape(s.detail) if s.detail else ''}")

    result = open_repo(ctx).bisect(good, bad, probe=probe, metric=metric, min_score=min_accuracy, max_drop=max_drop, run=run,
                                   on_step=step)
    emit(as_json, result, lambda: out.print(
        f"[bold]{result.first_bad[:12]} is the first bad commit[/] ({len(result.steps)} of the {result.between} commits "
        f"between {result.good[:12]} and {result.bad[:12]} tested)"))
