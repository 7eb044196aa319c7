"""dithub diff"""
from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ...formats.lora import PEFT_PREFIX
from ..options import Json
from ..output import emit, out, short
from ..state import repo as open_repo


def _f(x: float | None, fmt: str = ".4g") -> str:
    return "-" if x is None or x != x else format(x, fmt)


def diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="The old revision.")],
    b: Annotated[str, typer.Argument(help="The new revision.")],
    show_all: Annotated[bool, typer.Option("--all", help="List unchanged tensors too.")] = False,
    as_json: Json = False,
) -> None:
    """Compare two commits tensor by tensor (and LoRA module by module)."""
    res = open_repo(ctx).diff(a, b)

    def human() -> None:
        rows = res.tensors if show_all else res.changed
        out.print(f"diff {short(res.a)} ({res.kind_a}) → {short(res.b)} ({res.kind_b}): "
                  f"{len(res.changed)} of {len(res.tensors)} tensors changed (names without {PEFT_PREFIX!r})")
        if rows:
            table = Table("tensor", "status", "shape", "‖a‖", "‖b‖", "‖b−a‖", "cos(a,b)")
            table.columns[0].overflow = "fold"
            for t in rows:
                table.add_row(escape(t.name.removeprefix(PEFT_PREFIX)), t.status, "x".join(map(str, t.shape)), _f(t.norm_a), _f(t.norm_b),
                              _f(t.delta_norm), _f(t.cosine, ".4f"))
            out.print(table)
        if res.modules:
            table = Table("LoRA module", "status", "‖ΔW_b − ΔW_a‖", "effective rank", "rank")
            table.columns[0].overflow = "fold"
            for m in res.modules:
                table.add_row(escape(m.module), m.status, _f(m.delta_norm), f"{m.effective_rank:.2f}", str(m.rank))
            out.print(table)

    emit(as_json, res, human)
